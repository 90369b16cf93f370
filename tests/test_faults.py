"""Fault tolerance: preemption, hard kills, damaged checkpoints, NaNs and user
mistakes. Each test is one row of `python -m benchmarks.faults`; its first
docstring line is the scenario, the second what must happen."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigml_jax import ConfigError, NonFiniteError, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ('--config=experiments/configs/default.py', '--config.total_steps=300',
       '--config.log_every=20', '--config.eval_every=300',
       '--config.checkpoint_every=20', '--config.max_to_keep=3',
       '--config.optimizer.warmup_steps=10')


def _start(workdir, data_dir, *extra):
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.run', *RUN, *extra,
       f'--config.dataset.data_dir={data_dir}', f'--workdir={workdir}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(workdir, data_dir):
  proc = _start(workdir, data_dir)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return out, err


def _params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.device_get(ocp.StandardCheckpointer().restore(path)['params'])


def _assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _wait_for_training(workdir, proc, lines=2):
  path = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and len(open(path).readlines()) >= lines:
      return
    time.sleep(0.05)
  raise AssertionError('training did not start')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  _finish(workdir, data_dir)
  return _params(workdir, 300)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_preemption_saves_and_resumes(tmp_path, data_dir, uninterrupted, sig):
  """SIGTERM/SIGINT mid-run (preemption)
  finishes the step, saves it, exits 143 saying how to resume; rerun resumes
  and ends bit-identical to an uninterrupted run"""
  proc = _start(tmp_path, data_dir)
  _wait_for_training(tmp_path, proc)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  line = err.strip().splitlines()[-1]
  assert line.startswith(f'preempted: stopped by {sig.name} at step ')
  assert line.endswith('checkpoint saved, rerun the same command to resume')
  step = int(line.split('at step ')[1].split(';')[0])
  assert str(step) in os.listdir(tmp_path / 'checkpoints')
  _, err = _finish(tmp_path, data_dir)
  assert f'at step {step}' in err
  _assert_same_params(_params(tmp_path, 300), uninterrupted)


@pytest.mark.parametrize('seed', [0, 1])
def test_hard_kill_resumes_from_last_complete_checkpoint(
    tmp_path, data_dir, uninterrupted, seed):
  """SIGKILL at a random moment, saves every 20 steps (kills land mid-save)
  rerun resumes from the last complete checkpoint; final params bit-identical"""
  # Logs every 5 steps, saves every 20: a kill leaves rows past the last
  # checkpoint, which the resumed run must drop before logging them again.
  proc = _start(tmp_path, data_dir, '--config.log_every=5')
  _wait_for_training(tmp_path, proc)
  time.sleep(random.Random(seed).uniform(0.0, 1.5))
  proc.kill()
  proc.wait()
  proc = _start(tmp_path, data_dir, '--config.log_every=5')
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  _assert_same_params(_params(tmp_path, 300), uninterrupted)
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  train = [r['step'] for r in rows if r['split'] == 'train']
  assert train[0] == 1 and train[-1] == 300  # The killed run's rows stay,
  assert train == sorted(set(train))  # but none past its checkpoint.


def _truncate_latest(workdir):
  steps = sorted(int(s) for s in os.listdir(workdir / 'checkpoints')
                 if s.isdigit())
  files = [f for f in glob.glob(str(workdir / 'checkpoints' / str(steps[-1])
                                    / 'state' / '**' / '*'), recursive=True)
           if os.path.isfile(f) and os.path.getsize(f) > 100]
  for f in files:
    with open(f, 'r+b') as fh:
      fh.truncate(os.path.getsize(f) // 2)
  return steps


def test_damaged_latest_checkpoint_falls_back(tmp_path, tiny_config):
  """Latest checkpoint truncated on disk
  warned, moved aside, the previous one restored; no good checkpoint lost"""
  train_and_evaluate(tiny_config(total_steps=20), tmp_path)
  before = _params(tmp_path, 10)
  steps = _truncate_latest(tmp_path)
  assert steps == [10, 20]
  result = train_and_evaluate(tiny_config(total_steps=30), tmp_path)
  assert result['step'] == 30
  names = os.listdir(tmp_path / 'checkpoints')
  assert any(n.startswith('corrupt-20-') for n in names)
  _assert_same_params(_params(tmp_path, 10), before)
  # Resumed from 10, so it redid 11..30: the first run's rows past 10 were
  # dropped, and each step is logged once.
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  train = [r['step'] for r in rows if r['split'] == 'train']
  assert train == list(range(1, 31))


def test_non_finite_loss_stops_naming_the_step(tmp_path, tiny_config):
  """A learning rate so large that parameters overflow
  stops with an error naming the step; no non-finite state is checkpointed"""
  config = tiny_config(**{'optimizer.learning_rate': 1e38,
                          'optimizer.grad_clip_norm': 0.0,
                          'optimizer.name': 'sgd', 'log_every': 5})
  with pytest.raises(NonFiniteError, match=r'non-finite loss or gradient at '
                     r'step 1; the update was not applied'):
    train_and_evaluate(config, tmp_path)
  for step in os.listdir(tmp_path / 'checkpoints'):
    jax.tree.map(lambda x: np.testing.assert_array_equal(np.isfinite(x), True),
                 _params(tmp_path, step))


def test_non_finite_updates_skipped_by_config(tmp_path, tiny_config):
  """The same with nan_policy=skip
  every update is skipped, params stay at their finite initial values"""
  config = tiny_config(nan_policy='skip', total_steps=10,
                       **{'optimizer.learning_rate': 1e38,
                          'optimizer.grad_clip_norm': 0.0,
                          'optimizer.name': 'sgd', 'optimizer.weight_decay': 0.0})
  train_and_evaluate(config, tmp_path / 'skip')
  train_and_evaluate(tiny_config(total_steps=10, **{
      'optimizer.learning_rate': 0.0, 'optimizer.name': 'sgd'}),
                     tmp_path / 'frozen')
  _assert_same_params(_params(tmp_path / 'skip', 10),
                      _params(tmp_path / 'frozen', 10))


def test_non_finite_steps_counted_per_log_window(tmp_path, tiny_config,
                                                 caplog):
  """Warm-up from 0 keeps step 1 finite; every later update overflows and is
  skipped: each log window reports its own count and first bad step."""
  config = tiny_config(nan_policy='skip', total_steps=10, log_every=5,
                       **{'optimizer.learning_rate': 1e38,
                          'optimizer.warmup_steps': 2,
                          'optimizer.grad_clip_norm': 0.0,
                          'optimizer.name': 'sgd'})
  train_and_evaluate(config, tmp_path)
  assert 'skipped 4 non-finite update(s), first at step 2' in caplog.text
  assert 'skipped 5 non-finite update(s), first at step 6' in caplog.text
  assert caplog.text.count('non-finite update(s)') == 2


def test_checkpoint_that_does_not_fit_the_model(tmp_path, tiny_config):
  """Resuming a workdir written by a different model
  one-line error naming the parameter and both shapes; checkpoint untouched"""
  train_and_evaluate(tiny_config(total_steps=10), tmp_path)
  before = _params(tmp_path, 10)
  with pytest.raises(ConfigError, match=r'checkpoint step 10 in .* does not '
                     r'fit the model: params/Dense_0/bias is \(32,\) in the '
                     r'checkpoint but \(64,\) in the model'):
    train_and_evaluate(tiny_config(total_steps=20,
                                   **{'model.features': (64,)}), tmp_path)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10']
  _assert_same_params(_params(tmp_path, 10), before)


def test_unwritable_workdir(tmp_path, tiny_config):
  """A workdir that cannot be written
  one-line error naming the path and the fix"""
  (tmp_path / 'file').write_text('x')
  with pytest.raises(ConfigError, match=r'workdir .*file/run cannot be '
                     r'written \(Not a directory\); pass a --workdir you can '
                     'write to'):
    train_and_evaluate(tiny_config(), tmp_path / 'file' / 'run')


# Writes past 100 KB fail with EFBIG, as on a full disk; small log files still
# fit, checkpoint data files do not (the dense kernel alone is 131 KB; at a
# 200 KB limit a save sometimes fitted, as Orbax's split of the arrays over
# data files varies). Set in a child that then execs the CLI: a preexec_fn
# would run Python in a fork of this multithreaded process.
_FILE_SIZE_LIMITED = (
    'import os, resource, signal, sys; '
    'signal.signal(signal.SIGXFSZ, signal.SIG_IGN); '
    'resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)); '
    'os.execv(sys.executable, [sys.executable] + sys.argv[1:])')


_SAVE_FAILS_IN_A_LIBRARY_CALL = """
import json, resource, signal, sys, threading
import ml_collections
from bigml_jax import checkpoint, train_and_evaluate

config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
train_and_evaluate(config, sys.argv[2])
live = lambda: {t.name for t in threading.enumerate() if not t.daemon}
before = live()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
config.total_steps = 30
try:
  train_and_evaluate(config, sys.argv[2])
  error = None
except checkpoint.SaveError as e:
  error = str(e)
print(json.dumps({'error': error, 'left': sorted(live() - before)}))
"""


def test_failed_save_leaves_no_thread_behind(tmp_path, tiny_config):
  """A save fails inside a library call (disk full; in a child process, so
  the file size limit touches nothing else)
  SaveError, and no thread is left that would keep the process alive"""
  config = tiny_config(**{'model.features': (512,)})
  child = subprocess.run(
      [sys.executable, '-c', _SAVE_FAILS_IN_A_LIBRARY_CALL, config.to_json(),
       str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert child.returncode == 0, child.stderr[-3000:]
  result = json.loads(child.stdout.strip().splitlines()[-1])
  assert 'are intact' in result['error']
  assert result['left'] == []


def test_disk_full_during_save(tmp_path, data_dir):
  """The disk fills up during a checkpoint save
  one-line error saying the earlier checkpoints are intact; rerun resumes"""
  args = [sys.executable, '-m', 'experiments.run',
          '--config=experiments/configs/default.py', f'--workdir={tmp_path}',
          f'--config.dataset.data_dir={data_dir}', '--config.log_every=10',
          '--config.checkpoint_every=10', '--config.optimizer.warmup_steps=0']
  first = subprocess.run(args + ['--config.total_steps=20'], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  before = _params(tmp_path, 20)
  full = subprocess.run(
      [sys.executable, '-c', _FILE_SIZE_LIMITED] + args[1:] +
      ['--config.total_steps=40'], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert full.returncode == 1
  # Orbax's tracebacks of the failure (hundreds of lines) would bury the
  # error line; its log records keep their first lines only.
  assert not [l for l in full.stderr.splitlines()
              if l.startswith('  File "') and '/orbax/' in l]
  last = full.stderr.strip().splitlines()[-1]
  assert last.startswith('error: saving a checkpoint in ')
  assert last.endswith('are intact: free disk space and rerun the same '
                       'command to resume')
  _assert_same_params(_params(tmp_path, 20), before)
  again = subprocess.run(args + ['--config.total_steps=40'], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'at step 20' in again.stderr
  assert sorted(s for s in os.listdir(tmp_path / 'checkpoints')) == ['30', '40']
