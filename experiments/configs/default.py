"""CNN on `digits` (real 8x8 handwritten digits shipped with scikit-learn).

The default experiment: offline, CPU-friendly, ends by printing test accuracy.

  python -m experiments.run --config=experiments/configs/default.py \
      --workdir=/tmp/bigml/default

Result: test accuracy 0.9889 (loss 0.0426) after 1,000 steps, 8.6 s wall
from command start with a warm compilation cache (first train step at
2.3 s), on a 2-core AMD EPYC CPU shared with other jobs (load 2.1), one
CPU device, measured 2026-11-29. On 2026-11-28, on a quieter machine and
before that day's CPU changes: 6.8 s warm, 10.6 s on a first run.
"""

import ml_collections

from experiments.configs import _common


def get_config() -> ml_collections.ConfigDict:
  config = _common.base(batch_size=64, total_steps=1000, log_every=100,
                        eval_every=250, checkpoint_every=500)
  config.model = ml_collections.ConfigDict({
      'name': 'cnn', 'channels': (32, 64), 'dense': (128,),
      'dropout_rate': 0.1})
  config.dataset = _common.dataset('digits')
  config.optimizer = _common.optimizer('adamw', 1e-3, warmup_steps=50,
                                       weight_decay=1e-4, grad_clip_norm=1.0)
  return config
