"""Early stopping at a planted plateau, the best checkpoint kept beside the
newest, and --step=best."""

import json
import os

import jax
import numpy as np
import pytest

from bigml_jax import ConfigError, load_run, train_and_evaluate
from bigml_jax import checkpoint as ckpt
from bigml_jax.training.early_stopping import EarlyStopping


def _rows(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_stops_after_patience_evals_without_improvement():
  early = EarlyStopping({'metric': 'accuracy', 'mode': 'max', 'patience': 2,
                         'min_delta': 0.01})
  steps = {10: 0.5, 20: 0.6, 30: 0.605, 40: 0.62, 50: 0.62, 60: 0.625}
  said = {step: early.update(step, {'accuracy': v})
          for step, v in steps.items()}
  # 0.605 and 0.625 are within min_delta of the best: no improvement.
  assert [s for s, line in said.items() if line] == [60]
  assert said[60].startswith('early stopping at step 60: eval accuracy has '
                             'not improved by more than 0.01 for 2 evals '
                             '(best 0.62 at step 40)')
  minimum = EarlyStopping({'metric': 'loss', 'mode': 'min', 'patience': 1,
                           'min_delta': 0.0}, early.state() | {'best': None})
  assert minimum.update(1, {'loss': 2.0}) is None
  assert minimum.update(2, {'loss': 1.0}) is None
  assert minimum.update(3, {'loss': 1.5}).startswith('early stopping at step 3')


def test_run_ends_at_a_planted_plateau_and_stays_ended(tmp_path, tiny_config):
  # A learning rate of 0: every eval scores the same, so after the first,
  # `patience` evals without improvement end the run.
  config = tiny_config(total_steps=200, eval_every=5, checkpoint_every=100,
                       log_every=5, **{
                           'optimizer.learning_rate': 0.0,
                           'early_stopping.metric': 'accuracy',
                           'early_stopping.patience': 2})
  result = train_and_evaluate(config, tmp_path)
  assert result['step'] == 15 and result['early_stopped_step'] == 15
  assert [r['step'] for r in _rows(tmp_path, 'eval')] == [5, 10, 15]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['15']
  rows = len(_rows(tmp_path, 'train'))
  again = train_and_evaluate(config, tmp_path)  # Ended: it stays ended.
  assert again['step'] == 15 and len(_rows(tmp_path, 'train')) == rows


def test_an_unlogged_metric_is_refused_before_anything_is_written(
    tmp_path, tiny_config):
  config = tiny_config(**{'keep_best.metric': 'f1'})
  with pytest.raises(ConfigError, match=r"keep_best.metric 'f1' is not an "
                     r'eval metric of this run; it logs accuracy, loss'):
    train_and_evaluate(config, tmp_path / 'run')
  assert not os.path.exists(tmp_path / 'run')


def test_best_checkpoint_is_kept_beside_the_newest(tmp_path, tiny_config):
  # The loss falls as the run trains, so its highest value is the best
  # under mode 'max': the first eval's.
  config = tiny_config(total_steps=30, eval_every=5, checkpoint_every=10,
                       max_to_keep=1, **{'keep_best.metric': 'loss',
                                         'keep_best.mode': 'max'})
  train_and_evaluate(config, tmp_path)
  losses = {r['step']: r['loss'] for r in _rows(tmp_path, 'eval')}
  assert max(losses, key=losses.get) == 5
  assert sorted(os.listdir(tmp_path / 'checkpoints'),
                key=int) == ['5', '30']
  assert ckpt.run_checkpoints(str(tmp_path / 'checkpoints' / 'best'))[2] == 5
  run = load_run(str(tmp_path), step='best', devices=jax.devices()[:1])
  assert run.step == 5
  step5 = ckpt.load_params(str(tmp_path / 'checkpoints' / '5'), run.params)[0]
  jax.tree.map(np.testing.assert_array_equal, run.params, step5)


def test_step_best_needs_keep_best(tmp_path, tiny_config):
  train_and_evaluate(tiny_config(total_steps=10), tmp_path)
  with pytest.raises(ConfigError, match=r'kept no best checkpoint \(its '
                     r'config has no keep_best\)'):
    load_run(str(tmp_path), step='best')
