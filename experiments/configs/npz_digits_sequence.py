"""1-D models on an npz file of sequences: the `digits` read pixel by pixel
as sequences of 64 steps x 1 channel (a small "sequential MNIST").

  python -c "from bigml_jax.data.formats import examples; \
      examples.write_all('/tmp/bigml/files')"
  python -m experiments.run \
      --config=experiments/configs/npz_digits_sequence.py:cnn \
      --workdir=/tmp/bigml/npz_cnn

The model is the config argument: `cnn` (1-D convolutions and pooling),
`gru` (the last state of a GRU), `bigru` (a bidirectional GRU: both
directions' last states). The npz holds 'pixels' float32 [N, 64, 1] and 'label';
your own arrays need only other keys (--config.dataset.input_key).

Result: RESULT_NPZ
"""

import ml_collections

from experiments.configs import _common

FILES = '/tmp/bigml/files/digits_npz'
MODELS = {
    'cnn': {'name': 'cnn', 'channels': (32, 64), 'dense': (128,),
            'kernel_size': (5,), 'dropout_rate': 0.1},
    'gru': {'name': 'rnn_sequence', 'cell': 'gru', 'hidden_dim': 64,
            'bidirectional': False, 'readout': 'last'},
    'bigru': {'name': 'rnn_sequence', 'cell': 'gru', 'hidden_dim': 64,
              'bidirectional': True, 'readout': 'last'},
}


def get_config(model: str = 'cnn') -> ml_collections.ConfigDict:
  config = _common.base(batch_size=64, total_steps=1000, log_every=100,
                        eval_every=250, checkpoint_every=500)
  config.model = ml_collections.ConfigDict(MODELS[model])
  config.dataset = _common.dataset(
      'npz', train_path=f'{FILES}/train.npz', eval_path=f'{FILES}/test.npz',
      input_key='pixels', label_key='label', augment='')
  config.optimizer = _common.optimizer('adamw', 2e-3, warmup_steps=50,
                                       weight_decay=1e-4, grad_clip_norm=1.0)
  return config
