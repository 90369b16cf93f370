"""Runs one experiment: `python -m experiments.run --config=FILE --workdir=DIR`.

Any config field can be overridden, e.g. `--config.optimizer.learning_rate=3e-4`;
run-level flags can come from `--flagfile=FILE`. Mistakes a user can make end
in one line on stderr ("error: ...") and exit code 1.
"""

import time

_NOW = time.time()  # Before any import, as "command start" means.

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import signal
import sys


def _stopped_early(signum, frame):
  # Outside the loop, which handles the signal itself: the run has written
  # nothing yet, or has finished its checkpoints.
  del frame
  print(f'preempted: stopped by {signal.Signals(signum).name} outside the '
        'training loop; the finished checkpoints are intact, rerun the same '
        'command', file=sys.stderr, flush=True)
  os._exit(143)  # pylint: disable=protected-access


if __name__ == '__main__':
  signal.signal(signal.SIGTERM, _stopped_early)
  # A restart (below) blocks SIGTERM across exec, where the handler is
  # lost: a signal then waits for the new image's handler, not kills it.
  signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])

from bigml_jax import host

# "pid:start time" of a run that restarted itself: the same pid after exec.
_RESTARTED = 'BIGML_JAX_RESTARTED'
_pid, _, _start = os.environ.get(_RESTARTED, '').partition(':')
_START = float(_start) if _pid == str(os.getpid()) else _NOW

if __name__ == '__main__' and _pid != str(os.getpid()):
  # glibc reads its tunables only at start-up, so start again with them,
  # before the heavy imports below (bigml_jax/host.py says why). Once only,
  # even if glibc drops them (it does for setuid and setcap programs).
  _ENVIRON = host.environ_for_run(os.environ)
  if _ENVIRON is not None:
    _ENVIRON[_RESTARTED] = f'{os.getpid()}:{_START}'
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
      os.execve(sys.executable, sys.orig_argv, _ENVIRON)
    except OSError:
      # Run on without: it costs speed, not the run.
      signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])

import logging as std_logging
import threading

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow_datasets as tfds

import bigml_jax
import bigml_jax.checkpoint
import bigml_jax.workdir
import bigml_jax.parallel.multihost
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (experiments/configs/NAME.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for config.json, metrics, TensorBoard events '
    'and checkpoints; a workdir with checkpoints resumes.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, to run several '
    'processes by hand (SLURM and TPU pods are detected without it).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, "This process's index.")
flags.mark_flags_as_required(['config', 'workdir'])


def _exit_with(line: str):
  # Exit without interpreter teardown: after a failed save, TensorStore
  # callbacks can still reach Orbax's closed event loop and print a
  # traceback below the one line that explains the failure.
  print(line, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


_OURS = (os.sep + 'bigml_jax' + os.sep, os.sep + 'experiments' + os.sep)


def _quiet_libraries(record) -> bool:
  """Keeps the console to our own lines, and to libraries' warnings and
  errors in at most two lines each.

  A failed save (a full disk) or a damaged checkpoint ends the run with one
  line naming the cause; the tracebacks libraries log of it (Orbax and
  TensorStore from several threads, asyncio's 'Task exception was never
  retrieved'), hundreds of lines, would bury it."""
  if any(part in record.pathname for part in _OURS):
    return True
  if '/orbax/' in record.pathname and record.levelno < std_logging.WARNING:
    return False  # Orbax logs every save at INFO.
  if record.levelno >= std_logging.WARNING:
    lines = record.getMessage().splitlines()
    if record.exc_info and record.exc_info[1] is not None:
      e = record.exc_info[1]
      lines = lines[:1] + [f'{type(e).__name__}: {_first_line(e)}']
    record.msg, record.args = '\n'.join(lines[:2]), ()
    record.exc_info = record.exc_text = record.stack_info = None
  return True


def _first_line(e: BaseException) -> str:
  return bigml_jax.checkpoint.first_line(e)


def _one_line_hooks():
  """Exceptions that end in a library's thread, or that Python cannot
  raise (in a finalizer), print one line, not a traceback."""

  def thread_hook(args):
    if args.exc_type is SystemExit:
      return
    logging.warning('thread %s: %s: %s', getattr(args.thread, 'name', '?'),
                    args.exc_type.__name__, _first_line(args.exc_value))

  def unraisable_hook(unraisable):
    logging.warning('%s: %s: %s', unraisable.err_msg or 'ignored exception',
                    type(unraisable.exc_value).__name__,
                    _first_line(unraisable.exc_value))

  threading.excepthook = thread_hook
  sys.unraisablehook = unraisable_hook


def _use_compilation_cache():
  """Reruns and resumes skip XLA compilation: the train step compiled 3-5x
  faster from the persistent cache (benchmarks/NOTES.md). A cache the user
  chose (JAX_COMPILATION_CACHE_DIR or jax.config) is kept."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', os.path.join(
        os.path.expanduser('~'), '.cache', 'bigml_jax', 'xla'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    # Least recently used entries go past 4 GB; each rerun adds a few MB.
    jax.config.update('jax_compilation_cache_max_size', 4 << 30)


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_quiet_libraries)
  _one_line_hooks()
  if host.HUGE_PAGES in os.environ.get('GLIBC_TUNABLES', ''):
    logging.info('malloc: transparent huge pages requested '
                 '(GLIBC_TUNABLES=%s)', os.environ['GLIBC_TUNABLES'])
  try:
    bigml_jax.parallel.multihost.initialize(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    cli.fail(e)
  tfds.disable_progress_bar()
  _use_compilation_cache()
  # Resolved before the clock is read: the name's lazy import of the loop
  # and the data layer is part of the start-up that the log reports.
  train_and_evaluate = bigml_jax.train_and_evaluate
  call_time = time.time()
  try:
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (bigml_jax.ConfigError, bigml_jax.NonFiniteError,
          bigml_jax.checkpoint.SaveError, bigml_jax.checkpoint.RestoreError,
          bigml_jax.workdir.WorkdirError) as e:
    _exit_with(cli.error_line(e))
  except OSError as e:
    # A write to the workdir failed outside a checkpoint (metrics, events,
    # samples): every checkpoint that finished is intact.
    _exit_with(cli.error_line(
        f'writing to {_WORKDIR.value} failed ({_first_line(e)}); the '
        'finished checkpoints are intact: free disk space (or fix the '
        'workdir) and rerun the same command to resume'))
  except bigml_jax.Preempted as e:
    # 143 = 128 + SIGTERM: what schedulers expect from a preempted job.
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    sys.exit(143)
  if 'time_to_first_step_s' in result:
    logging.info('time from command start to the first train step: %.1fs',
                 result['time_to_first_step_s'] + call_time - _START)
  if 'examples_per_sec' in result:
    logging.info('steady-state examples/s: %.0f', result['examples_per_sec'])
  metrics = ', '.join(f'test {k[5:]} {v:.4f}' for k, v in result.items()
                      if k.startswith('eval_'))
  print(f'step {result["step"]}: {metrics}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
