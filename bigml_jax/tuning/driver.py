"""The sweep driver: Optuna ask/tell over `experiments.run` processes.

Each trial is a fresh process (`Sweep.run_command`) with the sweep's
overrides and the trial's, in its own workdir `SWEEP_DIR/trials/NNNN`, so
accelerator memory and compile state are freed between trials. The driver
follows the trial's `metrics.jsonl`, reports each eval row to Optuna and,
when the pruner says so, sends SIGTERM: the run saves a checkpoint and
exits 143, and the trial is recorded as pruned.

The study lives in an Optuna journal file in SWEEP_DIR (worker processes on
one machine share it) or in a database given as a URL (workers on many
machines). Running the same sweep again resumes its study: finished trials
stay; a trial whose worker died (its process gone, or on another machine
its heartbeat stale) is marked failed and its parameters are run again in
its workdir, so the run resumes from its last checkpoint.
"""

import ctypes
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

from absl import logging
import ml_collections
import optuna
from optuna.trial import TrialState

from bigml_jax.errors import ConfigError
from bigml_jax.tuning import report
from bigml_jax.tuning import space as space_lib

HOST = socket.gethostname()
POLL_S = 0.5  # How often a running trial's metrics are read.
# A trial on another machine whose heartbeat is older than GRACE_S is lost.
HEARTBEAT_S, GRACE_S = 30, 120
JOURNAL = 'study.journal'


@dataclasses.dataclass
class Sweep:
  """One sweep, as every worker of its study must see it.

  Attributes:
    config_file: the config as `--config` takes it ('FILE' or 'FILE:ARG').
    overrides: `--config.FIELD=VALUE` arguments given to every trial.
    space: {field: Param}, the search space.
    metric: the eval metric each trial's last eval row gives the objective.
    mode: 'min' or 'max'.
    workdir: SWEEP_DIR: trials/, the journal, the table, flags and plots.
    storage: a database URL, or None for the journal file in `workdir`.
    study_name: the study's name in `storage` (default: workdir's name).
    baseline: the config's own values of the space's fields, run first as
      trial 0 when they lie inside the space (else None).
    pruner: 'median' or 'none'.
    startup_trials: finished trials before the median pruner stops any.
    total_steps: the config's total_steps (a trial's last eval is never
      pruned).
    run_command: the program a trial runs, before its flags.
  """
  config_file: str
  overrides: list[str]
  space: dict[str, space_lib.Param]
  metric: str
  mode: str
  workdir: str
  storage: str | None = None
  study_name: str | None = None
  baseline: dict[str, Any] | None = None
  pruner: str = 'median'
  startup_trials: int = 5
  total_steps: int = 0
  run_command: tuple[str, ...] = (sys.executable, '-m', 'experiments.run')

  @property
  def name(self) -> str:
    return self.study_name or os.path.basename(os.path.abspath(self.workdir))

  def definition(self) -> dict[str, Any]:
    """What must match for workers (and reruns) to share a study."""
    return {'config': self.config_file, 'overrides': sorted(self.overrides),
            'space': {f: p.text for f, p in self.space.items()},
            'metric': self.metric, 'mode': self.mode}


def _field_of(override: str) -> str:
  return override[len('--config.'):].split('=', 1)[0]


def make_sweep(config_file: str, config: ml_collections.ConfigDict,
               overrides: list[str], workdir: str, *,
               sweep_spec: dict[str, Any] | None = None,
               space_args: dict[str, str] | None = None,
               metric: str | None = None, mode: str | None = None,
               **options) -> Sweep:
  """Builds and checks a Sweep; raises ConfigError naming any mistake.

  Args:
    config_file: 'FILE' or 'FILE:ARG', as `experiments.run --config` takes it.
    config: that config with `overrides` applied (to check the space on).
    overrides: '--config.FIELD=VALUE' arguments for every trial; a field
      they set is left out of the search space (it is fixed).
    workdir: SWEEP_DIR.
    sweep_spec: what the config file's get_sweep() returned, or None:
      {'space': {field: spec}, 'metric': name, 'mode': 'min' | 'max'}.
    space_args: {field: spec} from the command line; each adds a field or
      replaces the config's distribution (e.g. a narrower range).
    metric, mode: override the spec's objective (default: loss, min).
    **options: the other Sweep attributes (storage, pruner, ...).
  """
  if sweep_spec is not None and not isinstance(sweep_spec, dict):
    raise ConfigError(f'get_sweep() in {config_file} must return a dict with '
                      f'space, metric and mode, not '
                      f'{type(sweep_spec).__name__}')
  spec = dict(sweep_spec or {})
  unknown = set(spec) - {'space', 'metric', 'mode'}
  if unknown:
    raise ConfigError(f'get_sweep() in {config_file} returned unknown key(s) '
                      f'{", ".join(sorted(unknown))}; use space, metric, mode')
  space = space_lib.parse_space(spec.get('space', {}),
                                f'get_sweep() in {config_file}')
  space.update(space_lib.parse_space(space_args or {}, '--space'))
  fixed = {_field_of(o) for o in overrides}
  for field in sorted(fixed & set(space)):
    logging.info('%s is fixed by --config.%s: left out of the search space',
                 field, field)
    del space[field]
  if not space:
    raise ConfigError(f'the search space is empty: add get_sweep() to '
                      f'{config_file} or pass --space=FIELD=DISTRIBUTION, '
                      'e.g. --space=optimizer.learning_rate=loguniform(1e-4, '
                      '1e-1)')
  space_lib.check_space(space, config)
  metric = metric or spec.get('metric') or 'loss'
  mode = mode or spec.get('mode') or 'min'
  if mode not in ('min', 'max'):
    raise ConfigError(f'mode {mode!r} is unknown; use min or max')
  defaults = {f: _get(config, f) for f in space}
  baseline = (defaults if all(space[f].contains(v) for f, v in defaults.items())
              else None)
  return Sweep(config_file=config_file, overrides=list(overrides),
               space=space, metric=metric, mode=mode, workdir=workdir,
               baseline=baseline, total_steps=config.total_steps, **options)


def _get(config, field):
  for key in field.split('.'):
    config = config[key]
  return config


# Storage and study


def _mask(url: str) -> str:
  try:
    import sqlalchemy  # pylint: disable=g-import-not-at-top
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
  except Exception:  # pylint: disable=broad-except
    return url.split('@')[-1]


def open_storage(sweep: Sweep) -> optuna.storages.BaseStorage:
  """The study's storage: the journal file in SWEEP_DIR (which must exist),
  or the database at `sweep.storage`, checked reachable (ConfigError)."""
  if sweep.storage is None:
    from optuna.storages import journal  # pylint: disable=g-import-not-at-top
    return optuna.storages.JournalStorage(journal.JournalFileBackend(
        os.path.join(sweep.workdir, JOURNAL)))
  url = sweep.storage
  if '://' not in url:
    raise ConfigError(f'--storage={url} is not a database URL; pass e.g. '
                      'postgresql://USER:PASSWORD@HOST:5432/DB (or leave it '
                      'out for a journal file in --workdir)')
  engine = {'pool_pre_ping': True}
  if url.startswith('postgresql'):
    engine['connect_args'] = {'connect_timeout': 10}
  if url.startswith('postgresql://'):
    # SQLAlchemy 2.1 reads these with psycopg 3; the [sweep] extra
    # installs psycopg2.
    url = 'postgresql+psycopg2://' + url[len('postgresql://'):]
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
      return optuna.storages.RDBStorage(
          url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
          grace_period=GRACE_S, heartbeat_stale_trial_callback=retry_trial)
  except ImportError as e:
    raise ConfigError(f'storage {_mask(sweep.storage)}: its database driver '
                      f'is not installed ({e.__cause__ or e}); pip install '
                      "'bigml_jax[sweep]' (psycopg2, for PostgreSQL)") from None
  except Exception as e:  # pylint: disable=broad-except
    # SQLAlchemy wraps the driver's error; its first line names the cause.
    cause = str(getattr(e, 'orig', None) or e).strip().splitlines()
    raise ConfigError(f'storage {_mask(sweep.storage)} is unreachable: '
                      f'{cause[0] if cause else type(e).__name__}; start the '
                      'database or fix --storage') from None


def open_study(sweep: Sweep, storage) -> tuple[optuna.Study, bool]:
  """(the sweep's study, whether this call created it). A study of the same
  name made by a different sweep is a ConfigError."""
  # constant_liar: workers draw apart from the trials still running.
  options = dict(
      study_name=sweep.name, storage=storage,
      sampler=optuna.samplers.TPESampler(constant_liar=True),
      pruner=(optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials)
              if sweep.pruner == 'median' else optuna.pruners.NopPruner()))
  created = False
  try:
    study = optuna.load_study(**options)
  except KeyError:
    study = optuna.create_study(
        load_if_exists=True,
        direction='minimize' if sweep.mode == 'min' else 'maximize', **options)
    created = True
  definition = study.user_attrs.get('sweep')
  if definition is None:
    study.set_user_attr('sweep', sweep.definition())
    if sweep.baseline is not None and not study.get_trials(deepcopy=False):
      study.enqueue_trial(
          {f: space_lib.stored(v) for f, v in sweep.baseline.items()},
          user_attrs={'note': 'the config as it is'}, skip_if_exists=True)
  elif definition != sweep.definition():
    diff = ', '.join(f'{k}: {definition.get(k)!r} there, {v!r} here'
                     for k, v in sweep.definition().items()
                     if definition.get(k) != v)
    raise ConfigError(f'study {sweep.name} was started by another sweep '
                      f'({diff}); rerun with its flags, or pass another '
                      '--workdir (or --study)')
  return study, created


def load_study(workdir: str, storage: str | None = None,
               study_name: str | None = None) -> optuna.Study:
  """A sweep's study, to read in a notebook (e.g. `.trials_dataframe()`)."""
  if storage is None and not os.path.exists(os.path.join(workdir, JOURNAL)):
    raise ConfigError(f'{workdir} holds no sweep ({JOURNAL} is missing); '
                      'pass the --workdir of experiments.sweep')
  sweep = Sweep('', [], {}, 'loss', 'min', workdir, storage, study_name)
  return optuna.load_study(study_name=sweep.name, storage=open_storage(sweep))


# Trials lost with their worker


def process_id(pid: int) -> str | None:
  """'PID:START' of a live process (START from /proc, so a reused pid
  reads differently), or None when it is gone (or a zombie)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except OSError:
    if os.path.isdir('/proc'):
      return None
    try:  # No /proc (macOS): a pid that exists is taken to be the same.
      os.kill(pid, 0)
    except ProcessLookupError:
      return None
    except PermissionError:
      pass
    return f'{pid}:'
  return None if fields[0] in 'ZX' else f'{pid}:{fields[19]}'


def _alive(ident: str | None) -> bool:
  return bool(ident) and process_id(int(ident.split(':')[0])) == ident


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
  """Enqueues a lost trial's parameters again, in its workdir (so its run
  resumes from its checkpoint): its slot is run again."""
  attrs = {'retry_of': trial.number}
  for key in ('workdir', 'note'):  # Its run, and "the config as it is".
    if key in trial.user_attrs:
      attrs[key] = trial.user_attrs[key]
  logging.info('trial %d stopped before its end; its parameters run again, '
               'from its checkpoint', trial.number)
  study.enqueue_trial(trial.params, user_attrs=attrs)


def _wait_gone(ident: str, what: str) -> None:
  """Stops a lost trial's process (already sent SIGTERM when its worker
  died) and waits for it to save its checkpoint and exit."""
  pid = int(ident.split(':')[0])
  try:
    os.kill(pid, signal.SIGTERM)
  except OSError:
    return
  logging.info('waiting for %s (process %d) to save its checkpoint and exit',
               what, pid)
  while _alive(ident):  # Not our child: no wait() to block on.
    time.sleep(0.2)


def recover_lost(study: optuna.Study) -> None:
  """Fails the RUNNING trials whose worker is gone (on this machine: its
  process; elsewhere: its database heartbeat) and enqueues them again."""
  with warnings.catch_warnings():  # A no-op without heartbeats (journal).
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    optuna.storages.fail_stale_trials(study)
  storage = study._storage  # pylint: disable=protected-access
  for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
    attrs = trial.user_attrs
    if attrs.get('host') != HOST or 'worker' not in attrs:
      continue
    if _alive(attrs['worker']):
      continue
    if _alive(attrs.get('process')):
      _wait_gone(attrs['process'], f'trial {trial.number}')
    try:
      storage.set_trial_user_attr(trial._trial_id, 'lost', 'worker died')  # pylint: disable=protected-access
      storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # pylint: disable=protected-access
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
      continue  # Another worker got there first, and retries it.
    retry_trial(study, trial)


# One trial


class SetupError(ConfigError):
  """A mistake every trial would make (a metric the runs do not log, a run
  that fails before its first step): it ends the sweep."""


def _read_rows(path: str) -> list[dict[str, Any]]:
  """metrics.jsonl's complete rows (a run rewrites the file on resume)."""
  try:
    with open(path) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return []
  rows = []
  for line in lines:
    if not line.endswith('\n'):
      break
    try:
      rows.append(json.loads(line))
    except ValueError:
      continue
  return rows


def _error_line(log_path: str) -> str:
  """The run's `error: ...` line, or its last line."""
  with open(log_path, errors='replace') as f:
    lines = [l.strip() for l in f if l.strip()]
  errors = [l for l in lines if l.startswith('error:')]
  return (errors or lines or ['no output'])[-1]


if sys.platform.startswith('linux'):
  _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
  _PR_SET_PDEATHSIG, _SIGTERM = 1, int(signal.SIGTERM)

  def _stop_with_parent():
    # If the worker dies (even by SIGKILL) the run gets SIGTERM, so it
    # saves a checkpoint and exits rather than training on unwatched.
    _PRCTL(_PR_SET_PDEATHSIG, _SIGTERM)
else:
  _stop_with_parent = None


@dataclasses.dataclass
class _Context:
  """What a sweep's worker threads share."""
  sweep: Sweep
  storage: optuna.storages.BaseStorage
  study: optuna.Study
  trials: int
  stop: threading.Event
  created: list[str]
  errors: list[Exception] = dataclasses.field(default_factory=list)
  metric_checked: bool = False
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _check_metric(ctx: _Context, row: dict[str, Any]) -> None:
  if ctx.metric_checked:
    return
  metric = ctx.sweep.metric
  logged = sorted(k for k in row if k not in ('step', 'split'))
  if metric not in logged:
    import difflib  # pylint: disable=g-import-not-at-top
    close = difflib.get_close_matches(metric, logged, n=1)
    hint = f'did you mean {close[0]}? ' if close else ''
    raise SetupError(
        f'metric {metric} is not logged by this run\'s evals (they log '
        f'{", ".join(logged)}); {hint}pass --metric=NAME (and --mode) or fix '
        'get_sweep()')
  ctx.metric_checked = True


def _trial_argv(sweep: Sweep, workdir: str, values: dict[str, Any]
                ) -> list[str]:
  """The trial's command: the sweep's overrides, then the trial's values."""
  config_path, _, arg = sweep.config_file.partition(':')
  return [*sweep.run_command,
          f'--config={os.path.abspath(config_path)}{":" + arg if arg else ""}',
          f'--workdir={os.path.abspath(workdir)}', *sweep.overrides,
          *(f'--config.{f}={space_lib.override_text(v)}'
            for f, v in values.items())]


def _run_trial(ctx: _Context, trial: optuna.Trial) -> None:
  """Runs one trial's process to its end and tells the study how it went."""
  values = {f: p.suggest(trial) for f, p in ctx.sweep.space.items()}
  rel = trial.user_attrs.get('workdir') or os.path.join(
      'trials', f'{trial.number:04d}')
  workdir = os.path.join(ctx.sweep.workdir, rel)
  if not os.path.exists(workdir):
    os.makedirs(workdir)
    ctx.created.append(workdir)
  for key, value in (('workdir', rel), ('host', HOST),
                     ('worker', process_id(os.getpid()))):
    trial.set_user_attr(key, value)
  logging.info('trial %d: %s', trial.number, ' '.join(
      f'{f}={space_lib.override_text(v)}' for f, v in values.items()))
  start = time.time()
  with open(os.path.join(workdir, 'run.log'), 'ab') as log:
    # Its own session: a Ctrl-C in the terminal reaches only the driver,
    # which stops the trial with SIGTERM.
    proc = subprocess.Popen(_trial_argv(ctx.sweep, workdir, values),
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_stop_with_parent)
  trial.set_user_attr('process', process_id(proc.pid))
  try:
    prune_step, stopped = _follow(
        ctx, trial, proc, os.path.join(workdir, 'metrics.jsonl'),
        int(values.get('total_steps', ctx.sweep.total_steps)))
  except BaseException as e:
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    if isinstance(e, SetupError):  # Neither counted nor run again.
      trial.set_user_attr('lost', str(e))
      ctx.study.tell(trial, state=TrialState.FAIL)
    raise
  _tell(ctx, trial, proc.returncode, prune_step, stopped, time.time() - start,
        workdir)


def _follow(ctx: _Context, trial: optuna.Trial, proc: subprocess.Popen,
            metrics_path: str, total_steps: int) -> tuple[int | None, bool]:
  """Reports the trial's eval rows until its process exits; sends it
  SIGTERM when the pruner (or the sweep's stop) says so. Returns (the step
  it was pruned at or None, whether the sweep stopped it)."""
  metric = ctx.sweep.metric
  heartbeat = (ctx.storage.record_heartbeat
               if isinstance(ctx.storage, optuna.storages.RDBStorage) else None)
  reported, prune_step, stopped, beat = 0, None, False, 0.0
  while True:
    try:
      proc.wait(timeout=POLL_S)
    except subprocess.TimeoutExpired:
      pass
    exited = proc.returncode is not None
    for row in _read_rows(metrics_path):
      if row.get('split') != 'eval' or row['step'] <= reported:
        continue
      _check_metric(ctx, row)
      reported = row['step']
      value = float(row[metric])
      if not math.isfinite(value):
        continue
      trial.report(value, reported)
      if (prune_step is None and not exited and reported < total_steps and
          trial.should_prune()):
        logging.info('trial %d: pruned at step %d (%s %.4g)', trial.number,
                     reported, metric, value)
        proc.send_signal(signal.SIGTERM)
        prune_step = reported
    if exited:
      return prune_step, stopped
    if ctx.stop.is_set() and not stopped:
      proc.send_signal(signal.SIGTERM)
      stopped = True
    if heartbeat and time.time() - beat > HEARTBEAT_S:
      heartbeat(trial._trial_id)  # pylint: disable=protected-access
      beat = time.time()


def _tell(ctx, trial, returncode, prune_step, stopped, wall_s,
          workdir) -> None:
  """Records a finished trial process's outcome in the study."""
  sweep = ctx.sweep
  rows = _read_rows(os.path.join(workdir, 'metrics.jsonl'))
  evals = [r for r in rows if r.get('split') == 'eval']
  last = {k: v for k, v in evals[-1].items() if k not in ('step', 'split')
          } if evals else {}
  trial.set_user_attr('steps', max((r['step'] for r in rows), default=0))
  trial.set_user_attr('wall_s', round(wall_s, 2))
  trial.set_user_attr('eval', last)
  # 143: the run saved a checkpoint; killed by SIGTERM before its loop (or,
  # stopped by the sweep, any other way) it has nothing to save.
  preempted = (returncode in (143, -signal.SIGTERM) or
               (stopped and returncode != 0))
  value = last.get(sweep.metric)
  if returncode == 0 and value is not None and math.isfinite(value):
    ctx.study.tell(trial, value)
    outcome = f'{sweep.metric} {value:.4g}'
  elif preempted and prune_step is not None:
    ctx.study.tell(trial, state=TrialState.PRUNED)
    outcome = f'pruned at step {prune_step}'
  elif preempted:
    # Stopped by a signal not ours to give (the sweep's, or a scheduler's):
    # the run saved a checkpoint, and its parameters run again from it.
    trial.set_user_attr('lost', 'stopped by SIGTERM')
    ctx.study.tell(trial, state=TrialState.FAIL)
    retry_trial(ctx.study, ctx.study._storage.get_trial(trial._trial_id))  # pylint: disable=protected-access
    outcome = 'stopped; it resumes when the sweep runs again'
  else:
    error = (_error_line(os.path.join(workdir, 'run.log')) if returncode else
             f'{sweep.metric} is {value}')
    if not rows and not any(t.user_attrs.get('steps') for t in
                            ctx.study.get_trials(deepcopy=False)):
      # No trial of the sweep has trained a step: every one would fail so.
      trial.set_user_attr('lost', error)
      ctx.study.tell(trial, state=TrialState.FAIL)
      raise SetupError(f'trial {trial.number} failed before its first step '
                       f'(exit code {returncode}): '
                       f'{error.removeprefix("error: ")}')
    trial.set_user_attr('error', error)
    ctx.study.tell(trial, state=TrialState.FAIL)
    outcome = f'failed (exit code {returncode}): {error}'
  logging.info('trial %d: %s, %s steps in %.1fs', trial.number, outcome,
               trial.user_attrs.get('steps'), wall_s)
  if not (preempted and prune_step is None):
    report.write_hparams(workdir, ctx.study._storage.get_trial(  # pylint: disable=protected-access
        trial._trial_id), sweep.metric)  # pylint: disable=protected-access


# Workers


def _next_trial(ctx: _Context) -> optuna.Trial | None:
  """The next trial to run, or None when the study's N slots are taken.

  Slots go to counted trials (report.counts) in the order of their numbers:
  a waiting trial (the config's own values, a lost trial's retry, one you
  enqueued) runs when its slot is among the first N.
  """
  study = ctx.study
  with ctx.lock:  # Threads of one worker ask one at a time.
    recover_lost(study)
    counted = [t for t in study.get_trials(deepcopy=False) if report.counts(t)]
    if (len(counted) >= ctx.trials and not any(
        t.state == TrialState.WAITING for t in counted[:ctx.trials])):
      return None
    with warnings.catch_warnings():
      # Optuna's advice for Study.optimize; ask/tell records heartbeats here.
      warnings.filterwarnings('ignore', 'Heartbeat of storage is supposed')
      trial = study.ask()
    # Workers that asked at once: one past the N slots gives its trial back.
    before = [t for t in study.get_trials(deepcopy=False)
              if t.number < trial.number and report.counts(t)]
    if len(before) >= ctx.trials:
      study.tell(trial, state=TrialState.FAIL)
      return None
    return trial


def _work(ctx: _Context) -> None:
  try:
    while not ctx.stop.is_set():
      trial = _next_trial(ctx)
      if trial is None:
        return
      _run_trial(ctx, trial)
      report.write_outputs(ctx.study, ctx.sweep, plots=False)
  except Exception as e:  # pylint: disable=broad-except
    ctx.errors.append(e)
    ctx.stop.set()


@dataclasses.dataclass
class Result:
  """How a call of run_sweep ended: `rows` of the table (also written to
  SWEEP_DIR/trials.csv), and whether `stop` cut it short."""
  rows: list[dict[str, Any]]
  columns: list[str]
  stopped: bool
  summary: list[str]


def run_sweep(sweep: Sweep, trials: int, *, workers: int = 1,
              stop: threading.Event | None = None) -> Result:
  """Runs the sweep until its study has `trials` trials (resuming it).

  Args:
    sweep: from make_sweep().
    trials: N, the study's number of trials (finished and running, in all
      workers; trials lost with a worker do not count).
    workers: trials run at once by this process.
    stop: when set (e.g. by a signal handler), running trials are stopped
      with their checkpoints, to resume when the sweep runs again.

  Raises:
    ConfigError: an unreachable storage, or a study of another sweep.
    SetupError: a metric the runs do not log (found at the first eval), or
      a run that fails before its first step while no trial of the sweep
      has trained one (the same mistake in every trial: a data_dir, say);
      if the study is new, what this call wrote is removed again.
  """
  stop = stop or threading.Event()
  if '://' in sweep.workdir:
    raise ConfigError(f'--workdir={sweep.workdir}: URLs are not supported; '
                      'pass a directory (a shared one for workers on several '
                      'machines is not needed: each has its own)')
  created = []
  storage = None
  if sweep.storage is not None:  # Checked before anything is written.
    storage = open_storage(sweep)
  if not os.path.isdir(sweep.workdir):
    os.makedirs(sweep.workdir)
    created.append(sweep.workdir)
  try:
    if storage is None:
      if not os.path.exists(os.path.join(sweep.workdir, JOURNAL)):
        created.append(os.path.join(sweep.workdir, JOURNAL))
      storage = open_storage(sweep)
    study, new = open_study(sweep, storage)
  except BaseException:
    _remove(created)
    raise
  ctx = _Context(sweep, storage, study, trials, stop, created)
  threads = [threading.Thread(target=_work, args=(ctx,), name=f'worker-{i}',
                              daemon=True) for i in range(workers)]
  for t in threads:
    t.start()
  for t in threads:
    while t.is_alive():  # Joined in slices, so signal handlers can run.
      t.join(timeout=1.0)
  if ctx.errors:
    error = ctx.errors[0]
    if isinstance(error, SetupError):
      if new and sweep.storage is not None:
        optuna.delete_study(study_name=sweep.name, storage=storage)
      _remove(ctx.created)
    raise error
  rows, columns = report.write_outputs(study, sweep, plots=True)
  return Result(rows, columns, stopped=stop.is_set(),
                summary=report.summary(study, sweep, rows))


def _remove(paths: list[str]) -> None:
  for path in reversed(paths):
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
      os.remove(path)
