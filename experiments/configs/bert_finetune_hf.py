"""Fine-tunes a pretrained Hugging Face BERT for sentence classification with
the classic recipe (Devlin et al., 2019; transformers' Trainer defaults):
3 epochs, batch 16 (64 for evaluation), AdamW at 2e-5 with weight decay
0.01 (not on biases and LayerNorms), linear warmup over 500 steps then
linear decay to 0, gradients clipped at norm 1, [CLS] -> pooler -> a new
classifier. The model's sizes and its tokenizer come from the directory:

  python -m experiments.run --config=experiments/configs/bert_finetune_hf.py \
      --workdir=/tmp/bigml/bert_finetune_hf \
      --config.init_from=hf:/path/to/bert-base-uncased

Epochs become steps from the train split's size: fortunes' 1,219 examples
by default; for another dataset (--config.dataset.name=...) give its size,
--config=experiments/configs/bert_finetune_hf.py:NUM_TRAIN_EXAMPLES. A
run shorter than 5,000 steps warms up over its first tenth instead of 500
steps (fortunes: 3 x 77 = 231 steps, 23 of warmup).

Result: a smoke figure, not a quality one. A tiny random BERT (2 layers, width
32, 64 positions, a 400-token WordPiece trained on the fortunes; the model
of tests/interop/test_finetune.py, saved as a BertForPreTraining), run with
--config.dataset.max_length=64, took the 231 steps in 86 s wall (73 s
start-up and compilation) on a 2-core AMD EPYC CPU, one device, load 5-8,
2026-12-03, and ended at test accuracy 0.5081 (loss 1.064): the share of
the largest class, as expected of a random encoder at 2e-5. No pretrained
weights can be downloaded here, so bert-base-uncased's figure is not
measured.
"""

import math

import ml_collections

from experiments.configs import _common

FORTUNES_TRAIN_EXAMPLES = 1219
EPOCHS = 3
BATCH_SIZE = 16


def get_config(train_examples: str | None = None
               ) -> ml_collections.ConfigDict:
  num_train = int(train_examples or FORTUNES_TRAIN_EXAMPLES)
  steps_per_epoch = math.ceil(num_train / BATCH_SIZE)
  total_steps = EPOCHS * steps_per_epoch
  config = _common.base(batch_size=BATCH_SIZE, total_steps=total_steps,
                        log_every=min(50, steps_per_epoch),
                        eval_every=steps_per_epoch,
                        checkpoint_every=steps_per_epoch)
  config.eval_batch_size = 64
  config.task = 'classification'
  # Sizes, vocabulary and BERT's options come from init_from's config.json
  # (setting one here to another value is an error); these are the run's.
  config.model = ml_collections.ConfigDict({
      'name': 'bert', 'pooling': 'cls', 'dropout_rate': 0.1,
      'remat': 'none'})
  # The tokenizer is init_from's tokenizer.json: [CLS] text [SEP], padded.
  config.dataset = _common.dataset('fortunes', tokenizer='hf', max_length=128)
  config.optimizer = _common.optimizer(
      'adamw', 2e-5, schedule='linear',
      warmup_steps=min(500, total_steps // 10), weight_decay=0.01,
      grad_clip_norm=1.0)
  # The classifier is new; the encoder and pooler are the checkpoint's.
  config.init_skip = '^head/'
  return config
