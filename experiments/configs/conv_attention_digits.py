"""CNN with a ConvAttention block (self-attention over the 4x4 feature map
after the first conv block) on `digits`.

  python -m experiments.run --config=experiments/configs/conv_attention_digits.py \
      --workdir=/tmp/bigml/conv_attention_digits

Result: test accuracy 0.9833 (loss 0.061) after 1,000 steps, 9.8 s wall
(warm compilation cache; 14.8 s on a first run) on a 2-core AMD EPYC CPU
shared with other jobs (load 1.5-2.2), one CPU device, measured 2026-11-29.
"""

import ml_collections

from experiments.configs import _common


def get_config() -> ml_collections.ConfigDict:
  config = _common.base(batch_size=64, total_steps=1000, log_every=100)
  config.model = ml_collections.ConfigDict({
      'name': 'conv_attention_cnn', 'channels': (32, 64), 'dense': (128,),
      'attention_after': 0, 'num_heads': 2, 'dropout_rate': 0.1})
  config.dataset = _common.dataset('digits')
  config.optimizer = _common.optimizer('adamw', 1e-3, warmup_steps=50,
                                       weight_decay=1e-4, grad_clip_norm=1.0)
  return config
