"""Every test sees 8 fake CPU devices, so sharded code runs for real."""

import os
import tempfile

# Must be set before jax is imported anywhere.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Most test time is compiling the same small programs again in each run (and
# in each subprocess): a persistent cache shared by the session cuts it.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='bigml_jax_xla_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import ml_collections  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir private to this test session (digits is prepared on
  first use, in well under a second)."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def tiny_config(data_dir):
  """A small MLP on digits that trains in a few seconds; tests edit it."""

  def make(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(
        {'name': 'mlp', 'features': (32,), 'dropout_rate': 0.1})
    c.dataset = ml_collections.ConfigDict(
        {'name': 'digits', 'train_split': 'train', 'eval_split': 'test',
         'data_dir': data_dir})
    c.batch_size = 32
    c.total_steps = 20
    c.log_every = 1
    c.eval_every = 10
    c.checkpoint_every = 10
    c.max_to_keep = 3
    c.optimizer = ml_collections.ConfigDict(
        {'name': 'adamw', 'learning_rate': 1e-2, 'schedule': 'constant',
         'warmup_steps': 0, 'weight_decay': 1e-4, 'grad_clip_norm': 1.0})
    c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})
    for key, value in overrides.items():
      node = c
      *path, last = key.split('.')
      for p in path:
        node = node[p]
      node[last] = value
    return c

  return make
