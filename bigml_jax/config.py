"""Experiment configs: validation and the resolved copy saved with a run.

A config is an `ml_collections.ConfigDict` returned by `get_config()` in a file
under `experiments/configs/`. Checks here are structural (fields, enums,
ranges); names that live in a registry (model, dataset) are checked where
they are looked up, so the error can list the known ones.
"""

import json
import numbers
import os

import ml_collections

from bigml_jax.errors import ConfigError  # Re-exported: config.ConfigError.
from bigml_jax.optim import optimizer_fields


REQUIRED_FIELDS = (
    'seed', 'model.name', 'dataset.name', 'dataset.train_split',
    'dataset.eval_split', 'batch_size', 'total_steps', 'log_every',
    'eval_every', 'checkpoint_every', 'max_to_keep', 'optimizer.name',
    'optimizer.learning_rate', 'optimizer.schedule', 'optimizer.warmup_steps',
    'optimizer.weight_decay', 'optimizer.grad_clip_norm', 'mesh.data',
    'mesh.fsdp', 'mesh.tensor',
)
# Optional fields (defaults; the shipped configs declare them all, which
# `--config.KEY=VALUE` needs): parallelism 'jit' | 'pmap'; microbatches 1;
# steps_per_dispatch 1 (K train steps per compiled call, for tiny steps);
# compute_dtype None (= params' float32) | 'bfloat16'; nan_policy 'stop' |
# 'skip'; logical_axis_rules (bigml_jax.parallel.mesh.DEFAULT_RULES);
# init_from None | a run's workdir to fine-tune from, init_skip None | a
# regex of parameter names to keep as initialised (checkpoint.load_params).
OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'cosine', 'linear')


def _get(config, dotted):
  node = config
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      raise ConfigError(f'config has no field `{dotted}`; add it to the '
                        "config file's get_config()")
    node = node[key]
  return node


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError with the fix when `config` cannot describe a run."""
  for field in REQUIRED_FIELDS:
    _get(config, field)
  opt = config.optimizer
  if opt.name not in OPTIMIZERS:
    raise ConfigError(f'optimizer.name {opt.name!r} is unknown; use one of '
                      f'{", ".join(OPTIMIZERS)}')
  if opt.schedule not in SCHEDULES:
    raise ConfigError(f'optimizer.schedule {opt.schedule!r} is unknown; use '
                      f'one of {", ".join(SCHEDULES)}')
  for field in ('batch_size', 'total_steps', 'log_every', 'eval_every',
                'checkpoint_every', 'max_to_keep'):
    value = _get(config, field)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f'{field} must be a positive integer, got {value!r}')
  for field, allowed in (('parallelism', ('jit', 'pmap')),
                         ('nan_policy', ('stop', 'skip')),
                         ('compute_dtype', (None, '', 'float32', 'bfloat16',
                                            'float16'))):
    if config.get(field, allowed[0]) not in allowed:
      raise ConfigError(f'{field} {config.get(field)!r} is unknown; use one of '
                        f'{", ".join(a for a in allowed if a)}')
  if (not isinstance(config.seed, numbers.Integral) or
      isinstance(config.seed, bool) or not 0 <= config.seed < 2**32):
    # The data order takes a 32-bit seed: larger ones would repeat others'.
    raise ConfigError(f'seed must be an integer in [0, 2**32), got '
                      f'{config.seed!r}')
  microbatches = config.get('microbatches', 1)
  if not isinstance(microbatches, int) or microbatches <= 0:
    raise ConfigError(f'microbatches must be a positive integer, got '
                      f'{microbatches!r}')
  k = config.get('steps_per_dispatch', 1)
  if not isinstance(k, int) or k <= 0:
    raise ConfigError(f'steps_per_dispatch must be a positive integer, got '
                      f'{k!r}')
  if k > 1:
    if config.get('parallelism', 'jit') == 'pmap':
      raise ConfigError('steps_per_dispatch > 1 needs parallelism=jit; set '
                        'steps_per_dispatch=1 for pmap')
    for field in ('total_steps', 'log_every', 'eval_every',
                  'checkpoint_every'):
      if config[field] % k:
        raise ConfigError(
            f'{field} {config[field]} is not a multiple of steps_per_dispatch '
            f'{k}: logs, evals and checkpoints fall between dispatches; use '
            f'a multiple of {k}')
  if not 0 <= opt.warmup_steps <= config.total_steps:
    raise ConfigError(f'optimizer.warmup_steps {opt.warmup_steps} must be in '
                      f'[0, total_steps={config.total_steps}]')
  # A misspelt optimizer field, before any data is prepared. Sections inside
  # it are per-network overrides, which their task checks (the GAN's).
  optimizer_fields({k: v for k, v in opt.items()
                    if not isinstance(v, ml_collections.ConfigDict)})


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config to `workdir/config.json`; returns the path."""
  path = os.path.join(workdir, 'config.json')
  with open(path, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  return path


def load_saved_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads back what `save_config` wrote (for scripts and notebooks)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return ml_collections.ConfigDict(json.load(f))
