"""Hyper-parameter sweep on Optuna, each trial an `experiments.run` process:

  python -m experiments.sweep --config=experiments/configs/digits_mlp.py \
      --workdir=/tmp/bigml/sweep_mlp --trials=24 [--workers=2] \
      [--storage=postgresql://USER:PASSWORD@HOST/DB] [--config.FIELD=VALUE ...]

The search space and objective come from the config file's get_sweep() and
--space/--metric/--mode; a --config.FIELD override applies to every trial
(and takes FIELD out of the space). Rerunning the command resumes the
sweep. It writes SWEEP_DIR/trials.csv, best.flags (run the best trial
again with `python -m experiments.run --flagfile=SWEEP_DIR/best.flags`),
plots/*.png and one workdir per trial under trials/. Mistakes end in one
line on stderr ("error: ...") and exit code 1; SIGTERM/SIGINT stop the
running trials with their checkpoints (exit code 143).
"""

import importlib.util
import signal
import sys
import threading

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import optuna

from bigml_jax import errors
from bigml_jax import tuning
from bigml_jax.tuning import space as space_lib
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (experiments/configs/NAME.py); '
    'its get_sweep() gives the search space.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'SWEEP_DIR: the study journal, trials/NNNN (one run '
    'each), trials.csv, best.flags, plots/. Rerun to resume.')
_TRIALS = flags.DEFINE_integer(
    'trials', None, 'Trials in the study, over all workers (finished trials '
    'count on rerun).', lower_bound=0)
_WORKERS = flags.DEFINE_integer(
    'workers', 1, 'Trials this process runs at once.', lower_bound=1)
_STORAGE = flags.DEFINE_string(
    'storage', None, 'Database URL (postgresql://USER:PASSWORD@HOST/DB) '
    'for workers on several machines; default: a journal file in --workdir.')
_STUDY = flags.DEFINE_string(
    'study', None, "The study's name in --storage (default: the name of "
    '--workdir).')
_SPACE = flags.DEFINE_multi_string(
    'space', [], 'FIELD=DISTRIBUTION, e.g. optimizer.learning_rate='
    'loguniform(1e-4, 1e-1); adds FIELD to get_sweep()\'s space or replaces '
    'its distribution. Also uniform(a, b), int(a, b), logint(a, b), '
    'choice(x, y, ...).')
_METRIC = flags.DEFINE_string(
    'metric', None, 'Eval metric to optimise, as metrics.jsonl names it '
    '(default: get_sweep()\'s, else loss).')
_MODE = flags.DEFINE_enum('mode', None, ['min', 'max'],
                          'Whether the metric is minimised or maximised.')
_PRUNER = flags.DEFINE_enum(
    'pruner', 'median', ['median', 'none'], 'median: stop a trial whose eval '
    'metric is worse than the median of earlier trials at the same step.')
_STARTUP = flags.DEFINE_integer(
    'startup_trials', 5, 'Trials that finish before the pruner stops any.',
    lower_bound=0)
flags.mark_flags_as_required(['config', 'workdir', 'trials'])


def _get_sweep(config_file: str) -> dict | None:
  """What the config file's get_sweep() returns (with the `:ARG` that
  get_config takes), or None if it has none."""
  path, _, arg = config_file.partition(':')
  spec = importlib.util.spec_from_file_location('_sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_sweep = getattr(module, 'get_sweep', None)
  if get_sweep is None:
    return None
  try:
    return get_sweep(arg) if arg else get_sweep()
  except TypeError as e:
    raise errors.ConfigError(f'get_sweep() in {path} failed: {e}; it takes '
                             "get_config()'s argument") from None


def _space_args(values: list[str]) -> dict[str, str]:
  out = {}
  for value in values:
    field, eq, spec = value.partition('=')
    if not eq or not field.strip():
      raise errors.ConfigError(f'--space={value} is not FIELD=DISTRIBUTION; '
                               'e.g. --space=optimizer.learning_rate='
                               'loguniform(1e-4, 1e-1)')
    out[field.strip()] = spec
  return out


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  optuna.logging.set_verbosity(optuna.logging.ERROR)
  config_flag = flags.FLAGS['config']
  overrides = [f'--config.{k}={space_lib.override_text(v)}'
               for k, v in config_flag.override_values.items()]
  stop = threading.Event()

  def handle(signum, frame):
    del frame
    logging.warning('%s: stopping the running trials (they save checkpoints '
                    'and resume when the sweep runs again)',
                    signal.Signals(signum).name)
    stop.set()

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, handle)
  try:
    sweep = tuning.make_sweep(
        config_flag.config_filename, _CONFIG.value, overrides, _WORKDIR.value,
        sweep_spec=_get_sweep(config_flag.config_filename),
        space_args=_space_args(_SPACE.value), metric=_METRIC.value,
        mode=_MODE.value, storage=_STORAGE.value, study_name=_STUDY.value,
        pruner=_PRUNER.value, startup_trials=_STARTUP.value)
    result = tuning.run_sweep(sweep, _TRIALS.value, workers=_WORKERS.value,
                              stop=stop)
  except errors.ConfigError as e:
    cli.fail(e)
  print(tuning.format_table(result.rows, result.columns))
  print('\n'.join(result.summary), flush=True)
  if result.stopped:
    print('preempted: the sweep was stopped; rerun the same command to '
          'resume it', file=sys.stderr, flush=True)
    sys.exit(143)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
