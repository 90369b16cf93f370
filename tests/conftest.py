"""Every test sees 8 fake CPU devices, so sharded code runs for real."""

import atexit
import os
import shutil
import tempfile

# Must be set before jax is imported anywhere. LLVM's level 1 instead of 3:
# test time is mostly compiling, and level 1 compiles about a third faster
# (a ViT train step: 9.6 s -> 5.8 s) and runs these small steps as fast;
# pinned_losses.json was pinned at this level.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=1')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Most test time is compiling the same small programs again in each run (and
# in each subprocess): a persistent cache shared by the session (xdist's
# workers inherit it; the process that made it removes it) cuts it. Every
# program goes in: with only those over 0.5 s the suite took 4% longer (the
# CLI subprocesses compile their small programs again).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='bigml_jax_xla_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'],
                  ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir private to this test session (digits is prepared on
  first use, in well under a second)."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def tiny_config(data_dir):
  """A small MLP on digits that trains in a few seconds; tests edit it
  (`tiny_config(**{'optimizer.learning_rate': 0.1})`)."""
  from benchmarks import faults  # pylint: disable=g-import-not-at-top
  return lambda **overrides: faults.tiny_config(data_dir, **overrides)
