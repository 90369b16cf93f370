"""The loop's running metric sums, added inside the compiled step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigml_jax.models.mlp import MLP
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.tasks import ClassificationTask
from bigml_jax.tasks.base import NO_STEP
from bigml_jax.training import step as step_lib
from bigml_jax.training.state import sharded_init


def test_no_metrics_is_the_identity_of_add_metrics():
  metrics = {'loss_sum': jnp.float32(2.5), 'count': jnp.float32(32.0),
             'min_nonfinite_step': jnp.int32(7),
             'min_margin': jnp.array([-1.0, 3.0], jnp.float32)}
  zero = step_lib.no_metrics(jax.eval_shape(lambda: metrics))
  assert int(zero['min_nonfinite_step']) == NO_STEP
  np.testing.assert_array_equal(zero['min_margin'], [np.inf, np.inf])
  total = step_lib.add_metrics(zero, metrics)
  for k, v in metrics.items():
    assert total[k].dtype == v.dtype
    np.testing.assert_array_equal(total[k], v)


def test_summing_step_sums_what_the_plain_step_returns():
  """Three steps on a data x fsdp mesh: the summing step carries the same
  state as the plain one and its sums are the plain step's metrics added."""
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(
      {'data': 4, 'fsdp': 2, 'tensor': 1}))
  task = ClassificationTask(MLP(features=(32,), num_classes=10))
  tx = optax.sgd(0.1)
  batches = [{'image': jax.random.normal(jax.random.key(i), (16, 64)),
              'label': jnp.arange(16) % 10} for i in range(3)]

  make_state, _, shardings = sharded_init(task, tx, batches[0], mesh)
  rng = jax.random.PRNGKey(0)
  step_fn = step_lib.make_train_step(task, tx)
  plain = step_lib.jit_train_step(step_fn, shardings, mesh)
  summing = step_lib.jit_summing_step(step_fn, shardings, mesh)

  state, per_step = make_state(rng), []
  for batch in batches:
    state, metrics = plain(state, batch)
    per_step.append(jax.device_get(metrics))
  summed_state = make_state(rng)
  sums = step_lib.no_metrics(jax.eval_shape(step_fn, summed_state,
                                            batches[0])[1])
  for batch in batches:
    summed_state, sums = summing(summed_state, sums, batch)

  sums = jax.device_get(sums)
  assert sums['steps'] == 3 and sums['count'] == 48
  assert sums['min_nonfinite_step'] == NO_STEP
  for k in ('loss_sum', 'correct', 'grad_norm_sum'):
    np.testing.assert_allclose(sums[k], sum(m[k] for m in per_step),
                               rtol=1e-6)
  assert int(summed_state.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-7),
               summed_state.params, state.params)


def test_summing_steps_equal_that_many_single_steps():
  """K steps in one call (batches stacked [K, B, ...], B split over a
  data x fsdp mesh) carry the state and sums of K calls of one step."""
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(
      {'data': 4, 'fsdp': 2, 'tensor': 1}))
  task = ClassificationTask(MLP(features=(32,), num_classes=10))
  tx = optax.adam(0.01)
  rng = np.random.default_rng(3)
  stacked = {'image': rng.standard_normal((4, 16, 64), np.float32),
             'label': rng.integers(0, 10, (4, 16)).astype(np.int32)}

  make_state, _, shardings = sharded_init(
      task, tx, jax.tree.map(lambda x: x[0], stacked), mesh)
  key = jax.random.PRNGKey(0)
  step_fn = step_lib.make_train_step(task, tx)
  zero = lambda: step_lib.no_metrics(jax.eval_shape(
      step_fn, make_state(key), jax.tree.map(lambda x: x[0], stacked))[1])
  many = step_lib.jit_summing_step(step_fn, shardings, mesh, 4)
  state, sums = many(make_state(key), zero(), stacked)
  one = step_lib.jit_summing_step(step_fn, shardings, mesh)
  want_state, want_sums = make_state(key), zero()
  for i in range(4):
    want_state, want_sums = one(want_state, want_sums,
                                jax.tree.map(lambda x: x[i], stacked))
  assert int(state.step) == 4 and float(sums['steps']) == 4
  for k in ('loss_sum', 'correct', 'count', 'grad_norm_sum'):
    np.testing.assert_allclose(sums[k], want_sums[k], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               state.params, want_state.params)


def test_steps_refuse_a_bare_module_with_the_fix():
  with pytest.raises(TypeError, match=r'not a MLP; wrap a module as '
                     r"bigml_jax.ClassificationTask\(model, input_key='image'\)"):
    step_lib.make_train_step(MLP(features=(8,), num_classes=2), optax.sgd(0.1))
