"""The same run under every parallelism mode, accumulation and precision."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigml_jax import train_and_evaluate
from bigml_jax.models import MLP
from bigml_jax.optim import make_optimizer
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.tasks import ClassificationTask
from bigml_jax.training import step as step_lib
from bigml_jax.training.state import TrainState, sharded_init


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r['loss'] for r in rows if r['split'] == 'train']


# Dropout off: pmap draws a mask per device, jit one over the global batch.
MODES = {
    'dp8': {'mesh.data': 8},
    'fsdp8': {'mesh.data': 1, 'mesh.fsdp': 8},
    'tp8': {'mesh.data': 1, 'mesh.tensor': 8},
    'pmap8': {'parallelism': 'pmap'},
}


def test_modes_match_one_device(tiny_config, tmp_path):
  base = dict(total_steps=10, **{'model.dropout_rate': 0.0})
  train_and_evaluate(tiny_config(**base), tmp_path / 'one',
                     devices=jax.devices()[:1])
  expected = _losses(tmp_path / 'one')
  assert len(expected) == 10
  for name, overrides in MODES.items():
    result = train_and_evaluate(tiny_config(**base, **overrides),
                                tmp_path / name)
    assert result['step'] == 10
    np.testing.assert_allclose(_losses(tmp_path / name), expected, rtol=1e-4,
                               err_msg=name)


@pytest.mark.parametrize('model', [
    {},
    {'model.features': (32, 16, 24)},
    {'model': ml_collections.ConfigDict({
        'name': 'cnn', 'channels': (8, 16), 'dense': (32,),
        'dropout_rate': 0.0})}])
def test_data_fsdp_tensor_cube_matches_one_device(tiny_config, tmp_path,
                                                  model):
  base = dict(total_steps=5, **{'model.dropout_rate': 0.0}, **model)
  train_and_evaluate(tiny_config(**base), tmp_path / 'one',
                     devices=jax.devices()[:1])
  train_and_evaluate(tiny_config(**base, **{'mesh.data': 2, 'mesh.fsdp': 2,
                                            'mesh.tensor': 2}), tmp_path / 'cube')
  np.testing.assert_allclose(_losses(tmp_path / 'cube'),
                             _losses(tmp_path / 'one'), rtol=1e-4)


def test_fsdp_shards_params_and_optimizer_state_eight_ways():
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(
      {'data': 1, 'fsdp': 8, 'tensor': 1}))
  task = ClassificationTask(MLP(features=(256, 256), num_classes=16))
  tx = optax.adamw(1e-3)
  x = {'image': jnp.ones((4, 64))}
  init, abstract, shardings = sharded_init(task, tx, x, mesh)
  state = init(jax.random.PRNGKey(0))
  # A typed key makes the same state (its key data is the legacy key).
  typed = init(jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, typed, state)
  assert jax.tree.map(lambda a, s: (a.shape, a.sharding), state,
                      shardings) == jax.tree.map(lambda a, s: (a.shape, s),
                                                 abstract, shardings)
  for tree in (state.params, state.opt_state):
    total = sum(x.nbytes for x in jax.tree.leaves(tree))
    per_device = sum(x.addressable_shards[0].data.nbytes
                     for x in jax.tree.leaves(tree))
    # Kernels split 8 ways over their 'embed' dim; biases (~1% of the bytes)
    # and Adam's step count stay replicated.
    assert total / 8 <= per_device < 1.05 * total / 8, (per_device, total)


def _one_step(microbatches, batch_size=32, compute_dtype=None):
  task = ClassificationTask(MLP(features=(32,), num_classes=10))
  opt = ml_collections.ConfigDict({
      'name': 'sgd', 'learning_rate': 0.5, 'schedule': 'constant',
      'warmup_steps': 0, 'weight_decay': 0.0, 'grad_clip_norm': 0.0})
  tx, _ = make_optimizer(opt, 10)
  rng = jax.random.PRNGKey(0)
  batch = {'image': jax.random.uniform(jax.random.key(1), (batch_size, 64)),
           'label': jnp.arange(batch_size) % 10}
  params = nn.unbox(task.init(rng, batch))
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), rng)
  step = jax.jit(step_lib.make_train_step(task, tx, microbatches=microbatches,
                                          compute_dtype=compute_dtype))
  return step(state, batch)


def test_k_microbatches_of_b_equal_one_step_of_k_times_b():
  full_state, full_metrics = _one_step(1)
  micro_state, micro_metrics = _one_step(4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               micro_state.params, full_state.params)
  assert float(micro_metrics['count']) == float(full_metrics['count']) == 32
  np.testing.assert_allclose(micro_metrics['loss_sum'],
                             full_metrics['loss_sum'], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_state():
  f32_state, f32_metrics = _one_step(1)
  bf16_state, bf16_metrics = _one_step(1, compute_dtype=jnp.bfloat16)
  for leaf in jax.tree.leaves((bf16_state.params, bf16_state.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32)
  np.testing.assert_allclose(bf16_metrics['loss_sum'], f32_metrics['loss_sum'],
                             rtol=2e-2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-2),
               bf16_state.params, f32_state.params)


def test_microbatches_must_divide_the_batch(tiny_config, tmp_path):
  from bigml_jax import ConfigError
  with pytest.raises(ConfigError, match='batch_size 32 does not split into 3 '
                     'microbatches on 8 data-parallel devices; use a multiple '
                     'of 24'):
    train_and_evaluate(tiny_config(microbatches=3), tmp_path)


def test_custom_rules_on_fsdp_times_tensor_warn(tiny_config, tmp_path, caplog):
  cube = {'total_steps': 1, 'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}
  train_and_evaluate(tiny_config(**cube), tmp_path / 'default_rules')
  assert 'custom logical_axis_rules' not in caplog.text
  rules = [['batch', ['data', 'fsdp']], ['embed', 'tensor'], ['mlp', 'fsdp']]
  train_and_evaluate(tiny_config(**cube, logical_axis_rules=rules),
                     tmp_path / 'custom_rules')
  assert 'custom logical_axis_rules on a mesh with fsdp and tensor > 1' in (
      caplog.text)


def _train_rows(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return {r['step']: r for r in rows if r['split'] == 'train'}


@pytest.mark.parametrize('mode', ['dp8', 'pmap8'])
def test_log_windows_average_their_steps(tiny_config, tmp_path, mode):
  """The step's running sums: a log row is the mean over the steps since
  the last one (step 1 is always a window of its own), then they restart."""
  base = dict(total_steps=10, **{'model.dropout_rate': 0.0}, **MODES[mode])
  train_and_evaluate(tiny_config(**base), tmp_path / 'each')
  train_and_evaluate(tiny_config(**base, log_every=5), tmp_path / 'windows')
  each, windows = _train_rows(tmp_path / 'each'), _train_rows(
      tmp_path / 'windows')
  assert sorted(windows) == [1, 5, 10]
  for last, steps in ((1, [1]), (5, [2, 3, 4, 5]), (10, [6, 7, 8, 9, 10])):
    for key in ('loss', 'accuracy', 'grad_norm'):
      np.testing.assert_allclose(
          windows[last][key], np.mean([each[s][key] for s in steps]),
          rtol=1e-5, err_msg=f'{key} at step {last}')


def _final_params(workdir, step):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.device_get(ocp.StandardCheckpointer().restore(path)['params'])


def test_steps_per_dispatch_trains_as_one_step_per_call(tiny_config,
                                                        tmp_path):
  """Two steps a call, straight through and resumed at step 10: the same
  log windows, evals and parameters as one step a call."""
  base = dict(total_steps=20, log_every=2, **{'model.dropout_rate': 0.0})
  one = train_and_evaluate(tiny_config(**base), tmp_path / 'one')
  two = train_and_evaluate(tiny_config(**base, steps_per_dispatch=2),
                           tmp_path / 'two')
  resumed = tmp_path / 'resumed'
  train_and_evaluate(tiny_config(**dict(base, total_steps=10),
                                 steps_per_dispatch=2), resumed)
  again = train_and_evaluate(tiny_config(**base, steps_per_dispatch=2),
                             resumed)
  rows = {name: _train_rows(tmp_path / name)
          for name in ('one', 'two', 'resumed')}
  # One step a call logs step 1 alone; two a call, steps 1-2 together.
  assert sorted(rows['two']) == list(range(2, 21, 2))
  for name in ('two', 'resumed'):
    for step in range(4, 21, 2):
      np.testing.assert_allclose(rows[name][step]['loss'],
                                 rows['one'][step]['loss'], rtol=1e-5,
                                 err_msg=f'{name} at step {step}')
  for result in (two, again):
    assert result['step'] == 20
    assert result['eval_loss'] == pytest.approx(one['eval_loss'], rel=1e-5)
  for name in ('two', 'resumed'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                         atol=1e-6),
                 _final_params(tmp_path / name, 20),
                 _final_params(tmp_path / 'one', 20))


def test_steps_per_dispatch_must_divide_the_intervals(tiny_config, tmp_path):
  from bigml_jax import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match='log_every 3 is not a multiple of '
                     'steps_per_dispatch 2'):
    train_and_evaluate(tiny_config(log_every=3, steps_per_dispatch=2),
                       tmp_path / 'a')
  with pytest.raises(ConfigError, match='needs parallelism=jit'):
    train_and_evaluate(tiny_config(parallelism='pmap', log_every=2,
                                   steps_per_dispatch=2), tmp_path / 'b')
  train_and_evaluate(tiny_config(total_steps=10), tmp_path / 'c')
  with pytest.raises(ConfigError, match=r'is at step 10, not a multiple of '
                     r'steps_per_dispatch 4'):
    train_and_evaluate(tiny_config(total_steps=20, log_every=4,
                                   eval_every=20, checkpoint_every=20,
                                   steps_per_dispatch=4), tmp_path / 'c')
  assert sorted(os.listdir(tmp_path / 'c' / 'checkpoints')) == ['10']
