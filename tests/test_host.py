"""Start-up settings of the host process: huge pages for glibc's malloc."""

import os
import subprocess
import sys

import pytest

from bigml_jax import host

_FAULTS_PER_CALL = '''
import resource, statistics
import jax, jax.numpy as jnp
# tanh(a @ b) is a 100 MB temporary, allocated afresh by every call.
f = jax.jit(lambda a, b: jnp.tanh(a @ b).T @ a)
a, b = jnp.ones((4096, 16)), jnp.ones((16, 6144))
temp = f.lower(a, b).compile().memory_analysis().temp_size_in_bytes
faults = []
for _ in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(a, b).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults), temp / resource.getpagesize())
'''


def _huge_pages_on_request() -> bool:
  """THP in `madvise` mode: huge pages only where asked for (in `always`
  mode every large block already gets them, in `never` none does)."""
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[madvise]' in f.read()
  except OSError:
    return False


@pytest.mark.skipif(
    host.huge_page_environ({}) is None or not _huge_pages_on_request(),
    reason='needs glibc 2.35+ and transparent huge pages in madvise mode')
def test_huge_pages_fault_a_step_temporary_in_far_fewer_faults():
  def faults_per_call(environ):
    out = subprocess.run([sys.executable, '-c', _FAULTS_PER_CALL],
                         env=environ, capture_output=True, text=True,
                         check=True)
    faults, temp_pages = out.stdout.split()
    return float(faults), float(temp_pages)

  # One CPU device, as the CLI runs (the tests' 8 fake devices fault more).
  environ = {k: v for k, v in os.environ.items()
             if k not in ('GLIBC_TUNABLES', 'XLA_FLAGS')}
  # By default every call maps the temporary afresh, 4 KB at a time; with
  # huge pages most of it arrives 2 MB at a time (a median of 80-360 faults
  # per call here; the bound leaves room for a host short of free huge
  # pages).
  faults, temp_pages = faults_per_call(environ)
  assert faults == pytest.approx(temp_pages, rel=0.2)
  faults, _ = faults_per_call(host.huge_page_environ(environ))
  assert faults < temp_pages / 5


def test_huge_page_environ_adds_to_glibc_tunables(monkeypatch):
  monkeypatch.setattr(host.platform, 'system', lambda: 'Linux')
  monkeypatch.setattr(host.platform, 'libc_ver', lambda: ('glibc', '2.36'))
  assert host.huge_page_environ({'A': '1'}) == {
      'A': '1', 'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
  assert host.huge_page_environ(
      {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}) == {
          'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'}
  # A user's own hugetlb setting stands, and a second start changes nothing.
  assert host.huge_page_environ(
      {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}) is None
  assert host.huge_page_environ(host.huge_page_environ({})) is None


@pytest.mark.parametrize('system,libc', [
    ('Linux', ('glibc', '2.34')), ('Linux', ('musl', '1.2')),
    ('Linux', ('', '')), ('Darwin', ('', ''))])
def test_huge_page_environ_only_where_glibc_has_the_tunable(
    monkeypatch, system, libc):
  monkeypatch.setattr(host.platform, 'system', lambda: system)
  monkeypatch.setattr(host.platform, 'libc_ver', lambda: libc)
  assert host.huge_page_environ({}) is None


def test_cpu_backend_expected_from_platforms_and_plugins(monkeypatch):
  plugins = []
  monkeypatch.setattr(host.importlib.metadata, 'entry_points',
                      lambda group: plugins if group == 'jax_plugins' else [])
  installed = set()
  monkeypatch.setattr(host.importlib.util, 'find_spec',
                      lambda name: object() if name in installed else None)
  assert host.cpu_backend_expected({})
  installed.add('libtpu')
  assert not host.cpu_backend_expected({})
  assert host.cpu_backend_expected({'JAX_PLATFORMS': 'cpu'})
  assert not host.cpu_backend_expected({'JAX_PLATFORMS': 'cuda,cpu'})
  installed.clear()
  installed.add('jax_plugins')
  assert not host.cpu_backend_expected({})
  installed.clear()
  plugins.append('cuda')  # As jax-cuda12-plugin registers itself.
  assert not host.cpu_backend_expected({})
  assert host.environ_for_run({}) is None  # No restart for a GPU run.
