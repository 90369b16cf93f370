"""The fault matrix: every failure scenario, what must happen, and whether it
did.

  python -m benchmarks.faults [NAME ...]

Each scenario is a function here that raises AssertionError when the run
does not keep its promise; tests/test_faults.py runs the same functions, one
test each. Runs use the real CLI (a subprocess) where the promise is about
what the user sees, and `train_and_evaluate` in-process where it is about
files and numbers. Faults are real: signals, a small tmpfs that fills up (or,
without root, ENOSPC from the OS calls), an I/O error injected into the OS
calls (fault_injection.c, LD_PRELOAD), bytes changed on disk. Where a fault
must land at one moment (during evaluation, during the final save) it is
sent from that moment, never after a sleep.
"""

import contextlib
import dataclasses
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_RUN = ('--config=experiments/configs/default.py',
           '--config.total_steps=300', '--config.log_every=20',
           '--config.eval_every=300', '--config.checkpoint_every=20',
           '--config.max_to_keep=3', '--config.optimizer.warmup_steps=10')


def tiny_config(data_dir: str, **overrides):
  """A small MLP on digits that trains in a few seconds in-process (also the
  tests' `tiny_config`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bigml_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.defaults()
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
  c.update_from_flattened_dict(overrides)  # 'optimizer.learning_rate': ...
  return c


@dataclasses.dataclass
class Env:
  """What a scenario gets: a fresh directory and the shared data_dir."""
  tmp: str
  data_dir: str
  shared: dict = dataclasses.field(default_factory=dict)

  def path(self, *parts) -> str:
    return os.path.join(self.tmp, *parts)

  def config(self, **overrides):
    return tiny_config(self.data_dir, **overrides)

  def cli_args(self, workdir, *extra) -> list[str]:
    return [sys.executable, '-m', 'experiments.run', *CLI_RUN, *extra,
            f'--config.dataset.data_dir={self.data_dir}',
            f'--workdir={workdir}']

  def start(self, workdir, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        self.cli_args(workdir, *extra), cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  def cli(self, workdir, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(self.cli_args(workdir, *extra), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)

  def finish(self, workdir, *extra) -> subprocess.CompletedProcess:
    proc = self.cli(workdir, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc

  def uninterrupted(self) -> str:
    """A finished CLI run of CLI_RUN (computed once, then shared)."""
    if 'uninterrupted' not in self.shared:
      workdir = os.path.join(self.shared['root'], 'uninterrupted')
      self.finish(workdir)
      self.shared['uninterrupted'] = workdir
    return self.shared['uninterrupted']

  def copy_of(self, workdir: str, name: str) -> str:
    target = self.path(name)
    shutil.copytree(workdir, target)
    return target


@dataclasses.dataclass
class Scenario:
  name: str
  expected: str
  run: Callable[[Env], None]


SCENARIOS: list[Scenario] = []


def scenario(name: str, expected: str):
  def register(fn):
    SCENARIOS.append(Scenario(name, expected, fn))
    return fn
  return register


# Helpers ---------------------------------------------------------------------

def params(workdir, step):
  """The params of a checkpoint, read onto one local device whatever the
  devices (or processes) that wrote it."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata.tree)
  return jax.device_get(checkpointer.restore(path, target)['params'])


def assert_same_params(a, b):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal, a, b)


def steps_on_disk(workdir) -> list[str]:
  return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


def rows(workdir, split='train') -> list[int]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r['step'] for r in map(json.loads, f) if r['split'] == split]


def last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


def read(path) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def wait_for_rows(workdir, proc, count=2):
  """Until metrics.jsonl holds `count` rows (the run is training)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and len(read(path).splitlines()) >= count:
      return
    time.sleep(0.02)
  raise AssertionError(f'training did not start: {proc.poll()}')


def wait_for_handler(proc):
  """Until `proc` catches SIGTERM and does not block it (a restarting CLI
  blocks it across its exec), read from /proc: a condition, not a guess."""
  bit = 1 << (signal.SIGTERM - 1)
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    try:
      with open(f'/proc/{proc.pid}/status') as f:
        status = dict(line.split(':', 1) for line in f if ':' in line)
    except OSError:
      status = {}
    if (int(status.get('SigCgt', '0'), 16) & bit and
        not int(status.get('SigBlk', '0'), 16) & bit):
      return
    time.sleep(0.001)
  raise AssertionError('the CLI never handled SIGTERM')


def state_files(workdir, step) -> list[str]:
  return sorted(
      (f for f in glob.glob(os.path.join(workdir, 'checkpoints', str(step),
                                         'state', '**', '*'), recursive=True)
       if os.path.isfile(f)), key=os.path.getsize)


def fault_injection_library(env: Env) -> str:
  """fault_injection.c built into a shared library (once)."""
  if 'preload' not in env.shared:
    out = os.path.join(env.shared['root'], 'fault_injection.so')
    subprocess.run(['cc', '-shared', '-fPIC', '-O2', '-o', out,
                    os.path.join(ROOT, 'benchmarks', 'fault_injection.c'),
                    '-ldl'], check=True, capture_output=True)
    env.shared['preload'] = out
  return env.shared['preload']


@contextlib.contextmanager
def signal_at(module, name, when):
  """Wraps `module.name` to send SIGTERM to this process once
  `when(args, kwargs)` holds, right after the call (a fault at one
  moment, e.g. during evaluation)."""
  real = getattr(module, name)
  sent = []

  def wrapped(*args, **kwargs):
    out = real(*args, **kwargs)
    if not sent and when(args, kwargs):
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  with mock.patch.object(module, name, wrapped):
    yield sent


# Preemption and kills ------------------------------------------------------

def _preempt_and_resume(env: Env, sig):
  workdir = env.path('run')
  proc = env.start(workdir)
  wait_for_rows(workdir, proc)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 143, err[-3000:]
  line = last_line(err)
  assert line.startswith(f'preempted: stopped by {sig.name} at step '), line
  assert line.endswith('checkpoint saved, rerun the same command to resume')
  step = int(line.split('at step ')[1].split(';')[0])
  assert str(step) in steps_on_disk(workdir)
  err = env.finish(workdir).stderr
  assert f'at step {step}' in err
  assert_same_params(params(workdir, 300),
                     params(env.uninterrupted(), 300))


@scenario('SIGTERM mid-run (preemption)', 'finishes the step, saves it, exits '
          '143 saying how to resume; rerun ends bit-identical')
def sigterm_mid_run(env):
  _preempt_and_resume(env, signal.SIGTERM)


@scenario('SIGINT mid-run (Ctrl-C)', 'as SIGTERM')
def sigint_mid_run(env):
  _preempt_and_resume(env, signal.SIGINT)


@scenario('SIGKILL at a moment drawn with seed 0, saves every 20 steps',
          'rerun resumes from the last complete checkpoint; bit-identical')
def hard_kill(env):
  # Logs every 5 steps, saves every 20: a kill leaves rows past the last
  # checkpoint, which the resumed run drops before logging them again.
  workdir = env.path('run')
  proc = env.start(workdir, '--config.log_every=5')
  wait_for_rows(workdir, proc)
  time.sleep(random.Random(0).uniform(0.0, 1.5))  # Anywhere is fine.
  proc.kill()
  proc.wait()
  env.finish(workdir, '--config.log_every=5')
  assert_same_params(params(workdir, 300), params(env.uninterrupted(), 300))
  train = rows(workdir)
  assert train[0] == 1 and train[-1] == 300, train
  assert train == sorted(set(train)), train  # No step logged twice.


@scenario('SIGTERM as the CLI starts', 'exit 143 with the preempted: line; '
          'no lock, no empty checkpoints/ left; rerun trains')
def sigterm_at_start(env):
  workdir = env.path('run')
  proc = env.start(workdir, '--config.total_steps=20')
  wait_for_handler(proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 143, err[-3000:]
  assert last_line(err).startswith('preempted: stopped by SIGTERM'), err[-2000:]
  assert not os.path.exists(os.path.join(workdir, '.lock'))
  ckpts = os.path.join(workdir, 'checkpoints')
  assert not os.path.isdir(ckpts) or os.listdir(ckpts), os.listdir(ckpts)
  env.finish(workdir, '--config.total_steps=20')
  assert rows(workdir)[-1] == 20


@scenario('SIGTERM during setup, before the first step', 'Preempted; no '
          'checkpoints/ left behind; rerun trains from step 0')
def sigterm_before_first_step(env):
  from bigml_jax import Preempted, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from bigml_jax.training import perf  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  with signal_at(perf, 'compile_and_report', lambda a, k: True) as sent:
    try:
      train_and_evaluate(env.config(), workdir)
      raise AssertionError('not preempted')
    except Preempted as e:
      assert 'before the first step' in str(e), e
  assert sent
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
  assert train_and_evaluate(env.config(), workdir)['step'] == 20


@scenario('SIGTERM during evaluation', 'eval cut short, the step saved first, '
          'Preempted; rerun ends bit-identical')
def sigterm_during_eval(env):
  from bigml_jax import Preempted, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  reference = env.path('reference')
  train_and_evaluate(env.config(), reference)
  workdir = env.path('run')
  config = env.config(checkpoint_every=20)
  with signal_at(pipeline, 'eval_batches', lambda a, k: True):
    try:
      train_and_evaluate(config, workdir)
      raise AssertionError('not preempted')
    except Preempted as e:
      assert 'stopped by SIGTERM at step 10' in str(e), e
  assert steps_on_disk(workdir) == ['10']
  assert rows(workdir, 'eval') == []  # Cut short: no eval row for step 10.
  train_and_evaluate(config, workdir)
  assert_same_params(params(workdir, 20), params(reference, 20))


@scenario('SIGTERM during the final save', 'the save lands, then Preempted at '
          'the final step; rerun has nothing left to train')
def sigterm_during_final_save(env):
  from bigml_jax import Preempted, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from bigml_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  with signal_at(checkpoint, 'save', lambda a, k: a[1] == 20):
    try:
      train_and_evaluate(env.config(), workdir)
      raise AssertionError('not preempted')
    except Preempted as e:
      assert 'at step 20' in str(e), e
  assert steps_on_disk(workdir) == ['10', '20']
  before = read(os.path.join(workdir, 'metrics.jsonl'))
  assert train_and_evaluate(env.config(), workdir)['step'] == 20
  assert read(os.path.join(workdir, 'metrics.jsonl')) == before


# Damage ----------------------------------------------------------------------

def _damaged_then_resumed(env: Env, damage: Callable[[str], None]):
  """A tiny run saved at 10 and 20; `damage(workdir)` hits step 20; the
  rerun must move it aside, resume from 10 and end where an uninterrupted
  run does."""
  from bigml_jax import train_and_evaluate  # pylint: disable=g-import-not-at-top
  reference = env.path('reference')
  train_and_evaluate(env.config(total_steps=30), reference)
  workdir = env.path('run')
  train_and_evaluate(env.config(), workdir)
  before = params(workdir, 10)
  damage(workdir)
  result = train_and_evaluate(env.config(total_steps=30), workdir)
  assert result['step'] == 30
  names = steps_on_disk(workdir)
  assert any(n.startswith('corrupt-20-') for n in names), names
  assert_same_params(params(workdir, 10), before)
  assert_same_params(params(workdir, 30), params(reference, 30))
  assert rows(workdir) == list(range(1, 31))  # 11..20 logged once again.


@scenario('latest checkpoint truncated', 'warned, moved aside, the previous one '
          'restored; the run ends bit-identical')
def truncated(env):
  def damage(workdir):
    for f in state_files(workdir, 20):
      with open(f, 'r+b') as fh:
        fh.truncate(os.path.getsize(f) // 2)
  _damaged_then_resumed(env, damage)


@scenario('one flipped bit in the largest array file', 'detected by its '
          'checksum, moved aside, the previous one restored; bit-identical')
def bit_flip(env):
  def damage(workdir):
    largest = state_files(workdir, 20)[-1]
    with open(largest, 'r+b') as f:
      f.seek(os.path.getsize(largest) // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x10]))
  _damaged_then_resumed(env, damage)


@scenario('damaged data-iterator state (valid JSON, another position)',
          'detected, moved aside, the previous one restored; bit-identical')
def damaged_iterator_state(env):
  def damage(workdir):
    path = os.path.join(workdir, 'checkpoints', '20', 'data', 'metadata')
    state = json.loads(read(path))
    text = json.dumps({k: v + 1 if isinstance(v, int) else v
                       for k, v in state.items()})
    assert text != json.dumps(state)
    with open(path, 'w') as f:
      f.write(text)
  _damaged_then_resumed(env, damage)


@scenario('a checkpoint whose recorded step is not its directory\'s',
          'detected, moved aside; the newest true one restored')
def step_mismatch(env):
  from bigml_jax import train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(), workdir)
  ckpts = os.path.join(workdir, 'checkpoints')
  shutil.copytree(os.path.join(ckpts, '10'), os.path.join(ckpts, '30'))
  result = train_and_evaluate(env.config(total_steps=30), workdir)
  assert result['step'] == 30
  assert any(n.startswith('corrupt-30-') for n in steps_on_disk(workdir))
  assert rows(workdir) == list(range(1, 31))  # Resumed from 20.


@scenario('damaged array metadata (CLI)', 'one warning line, no library '
          'traceback; moved aside, the previous one restored; exit 0')
def damaged_metadata_cli(env):
  workdir = env.copy_of(env.uninterrupted(), 'run')
  path = glob.glob(os.path.join(workdir, 'checkpoints', '300', 'state',
                                'array_metadatas', '*'))[0]
  with open(path, 'r+b') as f:
    f.write(b'{not json')
  proc = env.finish(workdir, '--config.total_steps=320')
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  damaged = [l for l in proc.stderr.splitlines() if 'is damaged' in l]
  assert len(damaged) == 1 and 'step 300' in damaged[0], proc.stderr[-3000:]
  assert any(n.startswith('corrupt-300-') for n in steps_on_disk(workdir))
  assert 'at step 280' in proc.stderr


@scenario('every checkpoint damaged', 'stops with one line saying so; '
          'metrics kept; a rerun refuses again until the user chooses')
def all_damaged(env):
  from bigml_jax import checkpoint, train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(), workdir)
  metrics = read(os.path.join(workdir, 'metrics.jsonl'))
  for step in (10, 20):
    for f in state_files(workdir, step):
      with open(f, 'r+b') as fh:
        fh.truncate(os.path.getsize(f) // 2)
  for _ in range(2):
    try:
      train_and_evaluate(env.config(total_steps=30), workdir)
      raise AssertionError('not refused')
    except checkpoint.RestoreError as e:
      assert 'every checkpoint in' in str(e) and 'is damaged' in str(e), e
      assert 'rm -r' in str(e), e
  assert read(os.path.join(workdir, 'metrics.jsonl')) == metrics
  for name in steps_on_disk(workdir):
    shutil.rmtree(os.path.join(workdir, 'checkpoints', name))
  assert train_and_evaluate(env.config(), workdir)['step'] == 20
  assert glob.glob(os.path.join(workdir, 'metrics-*.jsonl'))  # Kept aside.


@scenario('an I/O error reading the latest checkpoint (EIO, files intact)',
          'one line; nothing renamed; metrics, config and checkpoints intact')
def transient_restore_error(env):
  workdir = env.copy_of(env.uninterrupted(), 'run')
  before = {name: read(os.path.join(workdir, name))
            for name in ('metrics.jsonl', 'config.json')}
  listing = steps_on_disk(workdir)
  proc = env.cli(workdir, '--config.total_steps=320', env=dict(
      os.environ, LD_PRELOAD=fault_injection_library(env),
      BIGML_FAULT_EIO=os.path.join(workdir, 'checkpoints', '300') + '/'))
  assert proc.returncode == 1, proc.stderr[-3000:]
  line = last_line(proc.stderr)
  assert line.startswith('error: checkpoint ') and 'Input/output error' in line
  assert 'nothing was changed' in line, line
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert steps_on_disk(workdir) == listing
  for name, content in before.items():
    assert read(os.path.join(workdir, name)) == content, name
  env.finish(workdir, '--config.total_steps=320')  # The fault gone: resumes.


# Disk full ---------------------------------------------------------------------

@contextlib.contextmanager
def small_disk(env: Env, megabytes: int):
  """(directory, fill) on a tmpfs of `megabytes` mounted for the scenario,
  or, without the right to mount, on a directory whose writes the OS calls
  refuse with ENOSPC once `fill()` has run (fault_injection.c)."""
  where = env.path('disk')
  os.makedirs(where)
  mounted = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={megabytes}m', 'tmpfs', where],
      capture_output=True).returncode == 0
  state = {'env': dict(os.environ)}

  def fill(leave: int = 0):
    if mounted:
      stat = os.statvfs(where)
      with open(os.path.join(where, 'filler'), 'wb') as f:
        f.write(b'\0' * max(stat.f_bavail * stat.f_frsize - leave, 0))
    else:
      state['env'] = dict(os.environ, LD_PRELOAD=fault_injection_library(env),
                          BIGML_FAULT_ENOSPC=where + '/' + (
                              'run/checkpoints' if leave else ''))

  def free():
    if mounted:
      os.remove(os.path.join(where, 'filler'))
    state['env'] = dict(os.environ)

  try:
    yield where, fill, free, state
  finally:
    if mounted:
      subprocess.run(['umount', '-l', where], check=False)


@scenario('the disk fills up during a checkpoint save (ENOSPC)',
          'one error line keeping the OS reason, no traceback; the earlier '
          'checkpoints intact; rerun resumes')
def disk_full_during_save(env):
  with small_disk(env, 8) as (disk, fill, free, state):
    workdir = os.path.join(disk, 'run')
    args = ('--config.total_steps=20', '--config.checkpoint_every=10',
            '--config.log_every=10', '--config.max_to_keep=2')
    env.finish(workdir, *args)
    before = params(workdir, 20)
    fill(leave=64 << 10)  # Logs still fit; a checkpoint does not.
    proc = env.cli(workdir, '--config.total_steps=40', *args[1:],
                   env=state['env'])
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith('error: saving a checkpoint in '), line
    assert 'No space left on device' in line, line
    assert line.endswith('are intact: free disk space and rerun the same '
                         'command to resume'), line
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert_same_params(params(workdir, 20), before)
    for line in read(os.path.join(workdir, 'metrics.jsonl')).splitlines():
      json.loads(line)  # Whole lines only.
    free()
    proc = env.finish(workdir, '--config.total_steps=40', *args[1:])
    assert 'at step 20' in proc.stderr
    assert steps_on_disk(workdir) == ['30', '40']


@scenario('the disk is already full when a run starts', 'one error line '
          'naming the workdir and the reason; config.json never half-written')
def disk_full_at_start(env):
  with small_disk(env, 8) as (disk, fill, _, state):
    workdir = os.path.join(disk, 'run')
    args = ('--config.total_steps=10', '--config.checkpoint_every=10')
    env.finish(workdir, *args)
    config = read(os.path.join(workdir, 'config.json'))
    fill()
    proc = env.cli(workdir, '--config.total_steps=20', *args[1:],
                   env=state['env'])
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith('error: ') and 'No space left on device' in line
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert read(os.path.join(workdir, 'config.json')) == config
    assert steps_on_disk(workdir) == ['10']


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


@scenario('a save fails inside a library call (file size limit)',
          'SaveError, and no thread left that would keep the process alive')
def failed_save_leaves_no_thread(env):
  config = env.config(**{'model.features': (512,)})
  child = subprocess.run(
      [sys.executable, '-c', _SAVE_FAILS_IN_A_LIBRARY_CALL, config.to_json(),
       env.path('run')], cwd=ROOT, capture_output=True, text=True,
      timeout=600)
  assert child.returncode == 0, child.stderr[-3000:]
  result = json.loads(last_line(child.stdout))
  assert 'are intact' in result['error'], result
  assert result['left'] == [], result


# One run per workdir, and its config -------------------------------------------

@scenario('a second run on a workdir in use', 'refused in one line naming '
          'host, pid and start; nothing of the first run touched')
def concurrent_run_refused(env):
  from bigml_jax import ConfigError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from bigml_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(total_steps=10), workdir)
  before = {n: read(os.path.join(workdir, n))
            for n in ('metrics.jsonl', 'config.json')}
  with workdir_lib.Lock(workdir):  # Held by this live process.
    try:
      train_and_evaluate(env.config(), workdir)
      raise AssertionError('not refused')
    except ConfigError as e:
      text = str(e)
  assert f'is in use by another run (host {socket.gethostname()}, pid ' \
         f'{os.getpid()}, started ' in text, text
  for name, content in before.items():
    assert read(os.path.join(workdir, name)) == content, name
  assert steps_on_disk(workdir) == ['10']


@scenario('a lock left by a run that died', 'taken over with a warning; the '
          'run resumes')
def stale_lock_taken_over(env):
  from bigml_jax import train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(total_steps=10), workdir)
  dead = subprocess.Popen(['true'])
  dead.wait()
  with open(os.path.join(workdir, '.lock'), 'w') as f:
    json.dump({'host': socket.gethostname(), 'pid': dead.pid,
               'started': 'earlier'}, f)
  assert train_and_evaluate(env.config(), workdir)['step'] == 20
  assert not os.path.exists(os.path.join(workdir, '.lock'))


@scenario('a changed config on an existing workdir', 'refused in one line '
          'naming fields and values; config.json untouched; allowed changes '
          'recorded in configs/')
def changed_config(env):
  from bigml_jax import ConfigError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(), workdir)
  config = read(os.path.join(workdir, 'config.json'))
  for overrides, message in (
      ({'optimizer.learning_rate': 0.5, 'seed': 3},
       'fields a resumed run must keep: optimizer.learning_rate 0.01 -> 0.5; '
       'seed 0 -> 3;'),
      ({'batch_size': 64}, 'batch_size 32 -> 64'),
      ({'total_steps': 15}, 'has reached step 20, past total_steps 15')):
    try:
      train_and_evaluate(env.config(**overrides), workdir)
      raise AssertionError(f'{overrides} not refused')
    except ConfigError as e:
      assert message in str(e), e
    assert read(os.path.join(workdir, 'config.json')) == config
  train_and_evaluate(env.config(total_steps=30, log_every=5), workdir)
  saved = json.loads(read(os.path.join(workdir, 'config.json')))
  assert saved['total_steps'] == 30 and saved['log_every'] == 5
  history = sorted(os.listdir(os.path.join(workdir, 'configs')))
  assert [h[:12] for h in history] == ['step00000000', 'step00000020'], history


# Numbers and mistakes -------------------------------------------------------------

@scenario('a learning rate so large that parameters overflow', 'stops with '
          'an error naming the step; no non-finite state is checkpointed')
def non_finite_stops(env):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bigml_jax import NonFiniteError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  config = env.config(**{'optimizer.learning_rate': 1e38,
                         'optimizer.grad_clip_norm': 0.0,
                         'optimizer.name': 'sgd', 'log_every': 5})
  workdir = env.path('run')
  try:
    train_and_evaluate(config, workdir)
    raise AssertionError('did not stop')
  except NonFiniteError as e:
    assert str(e).startswith('non-finite loss or gradient at step 1; the '
                             'update was not applied'), e
  ckpts = os.path.join(workdir, 'checkpoints')
  for step in (os.listdir(ckpts) if os.path.isdir(ckpts) else []):
    jax.tree.map(lambda x: np.testing.assert_array_equal(np.isfinite(x), True),
                 params(workdir, step))


@scenario('the same with nan_policy=skip', 'every update skipped, params stay '
          'at their finite initial values')
def non_finite_skipped(env):
  from bigml_jax import train_and_evaluate  # pylint: disable=g-import-not-at-top
  train_and_evaluate(env.config(
      nan_policy='skip', total_steps=10,
      **{'optimizer.learning_rate': 1e38, 'optimizer.grad_clip_norm': 0.0,
         'optimizer.name': 'sgd', 'optimizer.weight_decay': 0.0}),
                     env.path('skip'))
  train_and_evaluate(env.config(total_steps=10, **{
      'optimizer.learning_rate': 0.0, 'optimizer.name': 'sgd'}),
                     env.path('frozen'))
  assert_same_params(params(env.path('skip'), 10),
                     params(env.path('frozen'), 10))


@scenario('resuming a workdir written by a different model', 'one line '
          'naming the parameter and both shapes; checkpoint untouched')
def checkpoint_does_not_fit(env):
  from bigml_jax import ConfigError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from bigml_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  workdir = env.path('run')
  train_and_evaluate(env.config(total_steps=10), workdir)
  before = params(workdir, 10)
  # The config check would refuse the changed model first; with its record
  # gone, the checkpoint itself must.
  os.remove(os.path.join(workdir, config_lib.CONFIG_FILE))
  try:
    train_and_evaluate(env.config(**{'model.features': (64,)}), workdir)
    raise AssertionError('not refused')
  except ConfigError as e:
    assert ('does not fit the model: params/Dense_0/bias is (32,) in the '
            'checkpoint but (64,) in the model') in str(e), e
  assert steps_on_disk(workdir) == ['10']
  assert_same_params(params(workdir, 10), before)


@scenario('a workdir that cannot be written', 'one line naming the path and '
          'the fix')
def unwritable_workdir(env):
  from bigml_jax import ConfigError, train_and_evaluate  # pylint: disable=g-import-not-at-top
  with open(env.path('file'), 'w') as f:
    f.write('x')
  try:
    train_and_evaluate(env.config(), env.path('file', 'run'))
    raise AssertionError('not refused')
  except ConfigError as e:
    assert 'file/run cannot be written (Not a directory); pass a --workdir ' \
           'you can write to' in str(e), e


# Several processes ------------------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def environ_with_devices(count: int) -> dict[str, str]:
  """This process's environment for a CPU subprocess with `count` fake
  devices; the other XLA flags (the tests' compile level) stay."""
  return dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=re.sub(
      r'--xla_force_host_platform_device_count=\d+',
      f'--xla_force_host_platform_device_count={count}',
      os.environ['XLA_FLAGS']))


def two_processes(env: Env, workdir, *extra) -> list[subprocess.Popen]:
  port = _free_port()
  process_env = environ_with_devices(4)
  return [subprocess.Popen(
      env.cli_args(workdir, '--config.total_steps=100',
                   '--config.checkpoint_every=50', '--config.log_every=1',
                   '--config.eval_every=100', *extra,
                   f'--coordinator_address=127.0.0.1:{port}',
                   '--num_processes=2', f'--process_id={i}'),
      cwd=ROOT, env=process_env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]


def _two_process_reference(env: Env) -> str:
  if 'two_processes' not in env.shared:
    workdir = os.path.join(env.shared['root'], 'two_processes')
    procs = two_processes(env, workdir)
    for p in procs:
      _, err = p.communicate(timeout=900)
      assert p.returncode == 0, err[-3000:]
    env.shared['two_processes'] = workdir
  return env.shared['two_processes']


def _preempt_two(env: Env, workdir: str, targets: tuple[int, ...]) -> int:
  """Two processes started on `workdir`, SIGTERM to each of `targets` a
  logged step apart: both must stop at one step, saved; returns it."""
  metrics = os.path.join(workdir, 'metrics.jsonl')
  before = len(read(metrics).splitlines()) if os.path.exists(metrics) else 0
  procs = two_processes(env, workdir)
  wait_for_rows(workdir, procs[0], count=before + 3)
  seen = len(rows(workdir))
  for i in targets:
    if procs[i].poll() is None:
      procs[i].send_signal(signal.SIGTERM)
    # Staggered: the next signal once a step more is logged (or the
    # processes stop, as they soon do after the first).
    while procs[0].poll() is None and len(rows(workdir)) <= seen:
      time.sleep(0.01)
  outs = [p.communicate(timeout=900) for p in procs]
  lines = [last_line(err) for _, err in outs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 143, err[-3000:]
  stops = {int(l.split('at step ')[1].split(';')[0]) for l in lines}
  assert len(stops) == 1, lines  # Both at the same step.
  step = stops.pop()
  assert str(step) in steps_on_disk(workdir), steps_on_disk(workdir)
  return step


@scenario('two processes, SIGTERM to one of them; resumed, to both at '
          'different times', 'both stop at the same step with a finished '
          'checkpoint, exit 143; resume bit-identical')
def two_process_sigterm(env):
  workdir = env.path('run')
  first = _preempt_two(env, workdir, (1,))
  assert _preempt_two(env, workdir, (0, 1)) > first
  procs = two_processes(env, workdir)
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
  assert_same_params(params(workdir, 100),
                     params(_two_process_reference(env), 100))


# The matrix ------------------------------------------------------------------------

def run(name: str, tmp: str, data_dir: str, shared: dict | None = None
        ) -> None:
  """Runs scenario `name` in the fresh directory `tmp`; AssertionError if
  the run broke its promise."""
  shared = {} if shared is None else shared
  if 'root' not in shared:
    shared['root'] = tempfile.mkdtemp(prefix='bigml_faults_shared_')
  (match,) = [s for s in SCENARIOS if s.run.__name__ == name]
  match.run(Env(tmp, data_dir, shared))


def main(argv: list[str]) -> int:
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  os.chdir(ROOT)
  sys.path.insert(0, ROOT)
  wanted = argv or [s.run.__name__ for s in SCENARIOS]
  shared = {'root': tempfile.mkdtemp(prefix='bigml_faults_')}
  data_dir = os.path.join(shared['root'], 'tfds')
  results = []
  for s in SCENARIOS:
    if s.run.__name__ not in wanted:
      continue
    start = time.time()
    try:
      run(s.run.__name__, tempfile.mkdtemp(dir=shared['root']), data_dir,
          shared)
      observed = 'OK'
    except Exception as e:  # pylint: disable=broad-except
      observed = f'FAILED: {type(e).__name__}: {str(e).splitlines()[0][:100]}' \
          if str(e) else f'FAILED: {type(e).__name__}'
    results.append((s.name, observed, s.expected, time.time() - start))
    print(f'{observed[:6]:<6} {time.time() - start:5.0f}s  {s.name}',
          file=sys.stderr, flush=True)
  width = max(len(r[0]) for r in results)
  print(f'\n{"scenario":<{width}}  observed  expected')
  for scenario_name, observed, expected, _ in results:
    print(f'{scenario_name:<{width}}  {observed:<8}  {expected}')
  ok = sum(r[1] == 'OK' for r in results)
  print(f'\n{ok} of {len(results)} scenarios OK')
  shutil.rmtree(shared['root'], ignore_errors=True)
  return 0 if ok == len(results) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
