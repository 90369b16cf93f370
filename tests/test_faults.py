"""Fault tolerance: each scenario of the fault matrix (benchmarks/faults.py,
where they are written once) is a test here."""

import pytest

from benchmarks import faults


@pytest.fixture(scope='session')
def shared(tmp_path_factory):
  """What scenarios share: the uninterrupted runs they compare against."""
  return {'root': str(tmp_path_factory.mktemp('faults_shared'))}


@pytest.mark.parametrize('name', [s.run.__name__ for s in faults.SCENARIOS])
def test_fault(name, tmp_path, data_dir, shared):
  faults.run(name, str(tmp_path), data_dir, shared)
