"""Runs one experiment: `python -m experiments.run --config=FILE --workdir=DIR`.

Any config field can be overridden, e.g. `--config.optimizer.learning_rate=3e-4`;
run-level flags can come from `--flagfile=FILE`. Mistakes a user can make end
in one line on stderr and exit code 1.
"""

import time

_START = time.time()

# pylint: disable=g-import-not-at-top,wrong-import-position
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import bigml_jax

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (experiments/configs/NAME.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for config.json, metrics, TensorBoard events '
    'and checkpoints; a workdir with checkpoints resumes.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_libraries(record) -> bool:
  # Orbax logs every save at INFO; keep the console to our own lines and
  # to warnings from everyone.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_quiet_libraries)
  call_time = time.time()
  try:
    result = bigml_jax.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except bigml_jax.ConfigError as e:
    sys.exit(f'error: {e}')
  if 'time_to_first_step_s' in result:
    logging.info('time from command start to the first train step: %.1fs',
                 result['time_to_first_step_s'] + call_time - _START)
  print(f'step {result["step"]}: test loss {result["eval_loss"]:.4f}, '
        f'test accuracy {result["eval_accuracy"]:.4f}', flush=True)



if __name__ == '__main__':
  app.run(main)
