"""Overfitting on purpose: default.py's CNN on 100 of the 1,437 digits
training images, and three cures.

  python -m experiments.run --config=experiments/configs/overfit_digits.py:plain \\
      --workdir=/tmp/bigml/overfit_plain
  # likewise :regularized, :early_stopping, :augmented; then one plot:
  python -m experiments.plot --workdirs=/tmp/bigml/overfit_plain,... \\
      --metric=loss --out=overfit.png

- `plain`: no dropout, no weight decay: the train loss goes to ~0 while the
  test loss turns and climbs.
- `regularized`: dropout 0.5 before the dense layers, weight decay 0.05.
- `early_stopping`: `plain`, ended at the eval where the test loss stops
  falling (patience 5 evals), its best checkpoint kept (`--step=best`).
- `augmented`: `regularized`, images shifted by up to a pixel
  (`dataset.augment='random_crop(pad=1)'`).

The eval split is the test split here, as in every shipped config: choose
by it only to show the curves; select on a held-out part of train.

Result: test loss, accuracy; the train loss at the end; wall time from
command start; 2026-12-03 13:14-13:15 UTC on a 2-core AMD EPYC CPU, one
CPU device, load 1.4-1.7, the compilation cache warm from the first:
  plain           0.373, 0.9222 after 2,000 steps (best 0.353 at step 200);
                  train 0.0001; 21.6 s
  regularized     0.352, 0.9333 (best 0.318 at 1,050); train 0.0046; 20.1 s
  early_stopping  stopped at step 450: 0.359, 0.9167; its best checkpoint
                  (step 200) 0.353, 0.908; 12.9 s
  augmented       0.226, 0.9306 (best 0.210, 0.942 at 950); train 0.056;
                  18.9 s
The plot: docs/overfitting/digits_100.png (README, Overfitting).
"""

import ml_collections

from experiments.configs import _common

VARIANTS = ('plain', 'regularized', 'early_stopping', 'augmented')


def get_config(variant: str = 'plain') -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f'overfit_digits has no variant {variant!r}; use one of '
                     f'{", ".join(VARIANTS)} (e.g. overfit_digits.py:plain)')
  config = _common.base(batch_size=32, total_steps=2000, log_every=50,
                        eval_every=50, checkpoint_every=1000)
  regularized = variant in ('regularized', 'augmented')
  config.model = ml_collections.ConfigDict({
      'name': 'cnn', 'channels': (32, 64), 'dense': (128,),
      'dropout_rate': 0.5 if regularized else 0.0})
  config.dataset = _common.dataset('digits', train_examples=100)
  if variant == 'augmented':
    config.dataset.augment = 'random_crop(pad=1)'
  config.optimizer = _common.optimizer(
      'adamw', 1e-3, warmup_steps=50, weight_decay=0.05 if regularized else 0.0,
      grad_clip_norm=1.0)
  if variant == 'early_stopping':
    config.early_stopping.update(metric='loss', mode='min', patience=5)
    config.keep_best.update(metric='loss', mode='min')
  return config
