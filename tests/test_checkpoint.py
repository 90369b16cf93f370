"""Checkpoint helpers used alone, outside the training loop."""

import os
import re

import flax.linen as nn
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


def _files(directory):
  """Every file under `directory` with its size and modification time."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      info = os.stat(os.path.join(root, name))
      out[os.path.join(root, name)] = (info.st_size, info.st_mtime_ns)
  return out


def test_load_params_reads_onto_the_targets_shardings_but_for_skipped(
    tmp_path):
  """A pretraining run's encoder into a model with a new head and another
  vocabulary: those two are skipped by name, the rest is read onto the
  target's sharding, and the source is left as it was."""
  rng = np.random.default_rng(0)
  saved = {'encoder': {'w': rng.normal(size=(8, 4)).astype(np.float32)},
           'embed': rng.normal(size=(10, 4)).astype(np.float32),
           'mlm_bias': np.zeros(10, np.float32)}
  manager = ckpt.make_manager(str(tmp_path / 'pre' / 'checkpoints'), 2)
  ckpt.save(manager, 5, {'step': jnp.array(5), 'params': saved,
                         'opt_state': {'mu': saved['encoder']['w'] * 0}})
  ckpt.close(manager)
  before = _files(tmp_path / 'pre')

  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ('a', 'b'))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('a', 'b'))
  target = {'encoder': {'w': jax.device_put(jnp.zeros((8, 4)), sharding)},
            'embed': jnp.ones((12, 4)),  # Another vocabulary.
            'head': {'kernel': jnp.full((4, 3), 2.0)}}
  with pytest.raises(ConfigError, match=re.escape(
      'does not hold 2 parameter(s) of this model as they are here: embed '
      '(10, 4) there, (12, 4) here, head/kernel absent; keep them as '
      "initialised with init_skip (a regex of names, e.g. '^head/')")):
    ckpt.load_params(str(tmp_path / 'pre'), target)

  params, report = ckpt.load_params(str(tmp_path / 'pre'), target,
                                    skip='^(head|embed)')
  np.testing.assert_array_equal(params['encoder']['w'], saved['encoder']['w'])
  assert params['encoder']['w'].sharding == sharding
  np.testing.assert_array_equal(params['embed'], np.ones((12, 4)))
  np.testing.assert_array_equal(params['head']['kernel'], np.full((4, 3), 2.0))
  assert report == {'loaded': ['encoder/w'],
                    'skipped': ['embed', 'head/kernel'],
                    'unused': ['embed', 'mlm_bias']}
  assert _files(tmp_path / 'pre') == before
  # The checkpoints directory, or one step in it, names the run as well,
  # and params boxed with axis names (as `init` returns them) or numpy
  # arrays load too.
  boxed = dict(target, encoder={'w': nn.Partitioned(jnp.zeros((8, 4)),
                                                    ('embed', 'mlp'))})
  numpy = jax.tree.map(np.asarray, target)
  for source, params in (('pre/checkpoints', target),
                         ('pre/checkpoints/5', boxed), ('pre', numpy)):
    again, _ = ckpt.load_params(str(tmp_path / source), params, '^(head|em)')
    np.testing.assert_array_equal(again['encoder']['w'], saved['encoder']['w'])
  with pytest.raises(ConfigError, match=r'init_from .*pre/checkpoints/6 is '
                     r'not a finished checkpoint; .*pre/checkpoints has steps '
                     r'5$'):
    ckpt.load_params(str(tmp_path / 'pre/checkpoints/6'), target)
  # A damaged step names the others (and is left as it is).
  os.makedirs(tmp_path / 'pre/checkpoints/7/state')
  with pytest.raises(ConfigError, match=r'init_from: checkpoint .*pre/'
                     r'checkpoints/7 cannot be read .*; .*pre/checkpoints also '
                     r'has steps 5$'):
    ckpt.load_params(str(tmp_path / 'pre'), target)
  assert os.path.isdir(tmp_path / 'pre/checkpoints/7/state')
  os.rmdir(tmp_path / 'pre/checkpoints/7/state')
  os.rmdir(tmp_path / 'pre/checkpoints/7')
  # A run's workdir may have a number for a name, beside others.
  os.makedirs(tmp_path / 'runs')
  os.rename(tmp_path / 'pre', tmp_path / 'runs' / '2024')
  os.makedirs(tmp_path / 'runs' / '2023')
  again, _ = ckpt.load_params(str(tmp_path / 'runs' / '2024'), target,
                              '^(head|em)')
  np.testing.assert_array_equal(again['encoder']['w'], saved['encoder']['w'])


def test_load_params_refuses_what_cannot_start_a_run(tmp_path):
  with pytest.raises(ConfigError, match=r'init_from .*empty holds no '
                     r'checkpoint; pass the workdir of a run that saved one'):
    ckpt.load_params(str(tmp_path / 'empty'), {'w': jnp.zeros(2)})
  with pytest.raises(ConfigError, match='init_from gs://b/run: URLs are not '
                     'supported yet'):
    ckpt.load_params('gs://b/run', {'w': jnp.zeros(2)})
  manager = ckpt.make_manager(str(tmp_path / 'other'), 2)
  ckpt.save(manager, 1, {'params': {'w': jnp.zeros(3)}})
  ckpt.close(manager)
  with pytest.raises(ConfigError, match="init_skip '.' matches every "
                     'parameter'):
    ckpt.load_params(str(tmp_path / 'other'), {'w': jnp.zeros(2)}, skip='.')
  with pytest.raises(ConfigError, match=r"init_skip '\(' is not a regular "):
    ckpt.load_params(str(tmp_path / 'other'), {'w': jnp.zeros(2)}, skip='(')
