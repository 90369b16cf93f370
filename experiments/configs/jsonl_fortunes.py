"""Recurrent text classifier on a JSON-lines file: the `fortunes` written
out as {"text": ..., "label": "murphy" | "startrek" | "zippy"} lines.

  python -c "from bigml_jax.data.formats import examples; \
      examples.write_all('/tmp/bigml/files')"
  python -m experiments.run --config=experiments/configs/jsonl_fortunes.py \
      --workdir=/tmp/bigml/jsonl_fortunes

The model, tokenizer and optimizer of rnn_fortunes.py:rnn on the same
entries and splits, read from the files; class names are the sorted label
strings, recorded with the converted data.

Result: RESULT_JSONL
"""

import ml_collections

from experiments.configs import _common

FILES = '/tmp/bigml/files/fortunes_jsonl'


def get_config() -> ml_collections.ConfigDict:
  config = _common.base(batch_size=32, total_steps=1500, log_every=100)
  config.model = ml_collections.ConfigDict({
      'name': 'rnn_classifier', 'cell': 'rnn', 'embed_dim': 64,
      'hidden_dim': 128, 'dropout_rate': 0.1, 'bidirectional': False,
      'readout': 'last'})
  config.dataset = _common.dataset(
      'jsonl', train_path=f'{FILES}/train.jsonl',
      eval_path=f'{FILES}/test.jsonl', text_key='text', label_key='label',
      tokenizer='char', max_length=160)
  config.optimizer = _common.optimizer('adam', 2e-3, warmup_steps=100,
                                       grad_clip_norm=1.0)
  return config
