"""Two processes x 4 CPU devices on 127.0.0.1 train like one process x 8."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ('--config=experiments/configs/default.py', '--config.total_steps=6',
        '--config.log_every=1', '--config.eval_every=6',
        '--config.checkpoint_every=3', '--config.optimizer.warmup_steps=2')


def _env(devices):
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


def test_two_processes_match_one(tmp_path, data_dir):
  data = f'--config.dataset.data_dir={data_dir}'
  single = subprocess.run(
      [sys.executable, '-m', 'experiments.run', *ARGS, data,
       f'--workdir={tmp_path / "single"}'],
      cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'experiments.run', *ARGS, data,
       f'--workdir={tmp_path / "multi"}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'],
      cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'process 1 of 2; 4 local of 8 devices' in outs[1][1]

  one, two = _rows(tmp_path / 'single'), _rows(tmp_path / 'multi')
  assert [r['step'] for r in two] == [r['step'] for r in one]
  np.testing.assert_allclose([r['loss'] for r in two],
                             [r['loss'] for r in one], rtol=1e-4)
  # Both processes wrote their shards of the collective checkpoints.
  assert sorted(os.listdir(tmp_path / 'multi' / 'checkpoints')) == ['3', '6']
  # Only process 0 writes logs: one metrics row per logged step.
  assert len(two) == len(one)


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
