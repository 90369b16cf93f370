"""Two processes x 4 CPU devices on 127.0.0.1 train like one process x 8."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import faults

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ('--config=experiments/configs/default.py', '--config.total_steps=6',
        '--config.log_every=1', '--config.eval_every=6',
        '--config.checkpoint_every=3', '--config.optimizer.warmup_steps=2')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


# pmap draws dropout per device (as pmap code does), jit per example: with
# dropout off the modes compute the same steps.
NO_DROPOUT = ('--config.model.dropout_rate=0.0',)


@pytest.fixture(scope='module')
def single_rows(tmp_path_factory, data_dir):
  """One process on 8 devices (jit), dropout on: each example's dropout
  follows its global index, whichever process reads it."""
  return _one_process(tmp_path_factory.mktemp('single'), data_dir)


@pytest.fixture(scope='module')
def jit_rows(tmp_path_factory, data_dir):
  """The same without dropout: what the pmap runs match."""
  return _one_process(tmp_path_factory.mktemp('jit'), data_dir, *NO_DROPOUT)


def _two_processes(workdir, data_dir, *extra):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'experiments.run', *ARGS, *extra,
       f'--config.dataset.data_dir={data_dir}', f'--workdir={workdir}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=ROOT, env=faults.environ_with_devices(4), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'process 1 of 2; 4 local of 8 devices' in outs[1][1]
  return _rows(workdir)


def test_two_processes_match_one(tmp_path, data_dir, single_rows):
  one, two = single_rows, _two_processes(tmp_path, data_dir)
  assert [r['step'] for r in two] == [r['step'] for r in one]
  np.testing.assert_allclose([r['loss'] for r in two],
                             [r['loss'] for r in one], rtol=1e-4)
  # Both processes wrote their shards of the collective checkpoints.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '6']
  # Only process 0 writes logs: one metrics row per logged step.
  assert len(two) == len(one)


def test_two_processes_two_steps_per_call_match_one(tmp_path, data_dir,
                                                    single_rows):
  # Each process reads its half of K stacked batches, and global_batch
  # assembles [K, global batch, ...] under the stacked sharding.
  two = _two_processes(tmp_path, data_dir, '--config.steps_per_dispatch=2',
                       '--config.log_every=2', '--config.checkpoint_every=2')
  train = [r for r in two if r['split'] == 'train']
  assert [r['step'] for r in train] == [2, 4, 6]
  # A window's loss is the mean of its steps' losses in the one-step run.
  by_step = {r['step']: r['loss'] for r in single_rows
             if r['split'] == 'train'}
  np.testing.assert_allclose(
      [r['loss'] for r in train],
      [(by_step[s - 1] + by_step[s]) / 2 for s in (2, 4, 6)], rtol=1e-4)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '6']  # Keeps 2.


def _misaligned(x: np.ndarray) -> np.ndarray:
  """`x` copied to an address 16 bytes past a 64-byte boundary, as numpy's
  large arrays often are."""
  buffer = np.empty(x.nbytes + 80, np.uint8)
  start = -buffer.ctypes.data % 64 + 16
  out = buffer[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
  out[...] = x
  return out


def test_batches_for_cpu_steps_are_aligned_and_unchanged():
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bigml_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from bigml_jax.parallel import multihost  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(
      {'data': 4, 'fsdp': 2, 'tensor': 1}))
  sharding = mesh_lib.batch_sharding(mesh)
  want = {'image': np.random.default_rng(0).random((16, 28, 28, 1), np.float32),
          'label': np.arange(16, dtype=np.int32)}
  local = {k: _misaligned(v) for k, v in want.items()}
  assert local['image'].ctypes.data % 64 == 16
  for_jit = multihost.jit_batch(local, sharding)
  placed = jax.jit(lambda b: b, in_shardings=(sharding,))(for_jit)
  for k, v in want.items():
    assert for_jit[k].ctypes.data % 64 == 0
    np.testing.assert_array_equal(for_jit[k], v)
    np.testing.assert_array_equal(placed[k], v)
    assert placed[k].sharding.is_equivalent_to(sharding, v.ndim)
  arrays = multihost.global_batch(local, sharding)
  for k, v in want.items():
    assert arrays[k].sharding == sharding
    np.testing.assert_array_equal(arrays[k], v)


def _one_process(workdir, data_dir, *extra):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.run', *ARGS, *extra,
       f'--config.dataset.data_dir={data_dir}', f'--workdir={workdir}'],
      cwd=ROOT, env=faults.environ_with_devices(8), capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _rows(workdir)


def _close(rows, reference):
  """Same steps, losses within float tolerance: pmap and jit sum the same
  numbers in another order."""
  rows, reference = ([r for r in x if r['split'] == 'train']
                     for x in (rows, reference))
  assert [r['step'] for r in rows] == [r['step'] for r in reference]
  np.testing.assert_allclose([r['loss'] for r in rows],
                             [r['loss'] for r in reference], rtol=1e-4)


def test_pmap_across_two_processes_matches_jit_and_resumes_under_jit_and_back(
    tmp_path, data_dir, jit_rows):
  # Each process pmaps over its 4 devices; gradients average over all 8.
  # pmap on two processes to step 3, then jit on one process to step 6.
  rows = _two_processes(tmp_path / 'a', data_dir, '--config.parallelism=pmap',
                        '--config.total_steps=3', *NO_DROPOUT)
  _close(rows, [r for r in jit_rows if r['step'] <= 3])
  assert sorted(os.listdir(tmp_path / 'a' / 'checkpoints')) == ['3']
  _close(_one_process(tmp_path / 'a', data_dir, *NO_DROPOUT), jit_rows)
  # And jit on one process to step 3, then pmap on two to step 6.
  _one_process(tmp_path / 'b', data_dir, '--config.total_steps=3',
               *NO_DROPOUT)
  _close(_two_processes(tmp_path / 'b', data_dir, '--config.parallelism=pmap',
                        *NO_DROPOUT), jit_rows)
  assert sorted(os.listdir(tmp_path / 'b' / 'checkpoints')) == ['3', '6']
