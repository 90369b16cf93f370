"""Checkpoint helpers used alone, outside the training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigml_jax import ConfigError
from bigml_jax import checkpoint as ckpt


def _state(rng):
  return {'step': jnp.array(3, jnp.int32), 'rng': rng,
          'params': {'w': jnp.arange(6.0).reshape(2, 3)}}


@pytest.mark.parametrize('make_key', [jax.random.key, jax.random.PRNGKey],
                         ids=['typed key', 'raw key'])
def test_restore_latest_round_trips_either_kind_of_rng(tmp_path, make_key):
  state = _state(make_key(1))
  manager = ckpt.make_manager(str(tmp_path), max_to_keep=2)
  assert ckpt.save(manager, 3, state, {'next_index': 7}, {'step': 3})
  ckpt.close(manager)

  manager = ckpt.make_manager(str(tmp_path), max_to_keep=2)
  target = jax.eval_shape(lambda: _state(make_key(0)))
  restored, data, metadata = ckpt.restore_latest(manager, target)
  manager.close()
  np.testing.assert_array_equal(restored['params']['w'], state['params']['w'])
  unwrap = lambda k: (jax.random.key_data(k) if jax.dtypes.issubdtype(
      k.dtype, jax.dtypes.prng_key) else k)
  np.testing.assert_array_equal(unwrap(restored['rng']), unwrap(state['rng']))
  assert data == {'next_index': 7} and metadata == {'step': 3}


def test_a_checkpoint_that_does_not_fit_names_the_parameter(tmp_path):
  manager = ckpt.make_manager(str(tmp_path), max_to_keep=2)
  ckpt.save(manager, 1, _state(jax.random.key(1)))  # No data state: {}.
  ckpt.close(manager)
  manager = ckpt.make_manager(str(tmp_path), max_to_keep=2)
  target = jax.eval_shape(lambda: dict(_state(jax.random.key(0)),
                                       params={'w': jnp.zeros((3, 3))}))
  with pytest.raises(ConfigError, match=r'params/w is \(2, 3\) in the '
                     r'checkpoint but \(3, 3\) in the model'):
    ckpt.restore_latest(manager, target)
  manager.close()
