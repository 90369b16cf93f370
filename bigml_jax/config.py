"""Experiment configs: validation and the resolved copy saved with a run.

A config is an `ml_collections.ConfigDict` returned by `get_config()` in a file
under `experiments/configs/`. Checks here are structural (fields, enums,
ranges); names that live in a registry (model, dataset) are checked where
they are looked up, so the error can list the known ones.
"""

import copy
import json
import numbers
import os
import time

import ml_collections

from bigml_jax import workdir as workdir_lib

# ConfigError is re-exported: callers import it from here.
from bigml_jax.errors import ConfigError, check_choice, listing
from bigml_jax.optim import OPTIONAL_FIELDS as OPTIMIZER_DEFAULTS
from bigml_jax.optim import optimizer_fields


# Every top-level field of a config, once: its default (REQUIRED: none) and
# what it is. `with_defaults` fills in what a config leaves out; the shipped
# configs start from `defaults()` and set what differs. The optimizer's
# fields are bigml_jax.optim's (REQUIRED_FIELDS, OPTIONAL_FIELDS); the
# dataset's and the model's are their sections' (data.pipeline, the module).
REQUIRED = object()
FIELDS = {
    'seed': (REQUIRED, 'PRNG seed of the params, dropout and the data order'),
    'model': (REQUIRED, 'name (a bigml_jax.models name) and its '
              'hyperparameters'),
    'dataset': (REQUIRED, 'name, train_split, eval_split, data_dir, ...'),
    'optimizer': (REQUIRED, 'name, learning_rate, schedule, ... (optim.py)'),
    'batch_size': (REQUIRED, 'global batch of a train step'),
    'total_steps': (REQUIRED, 'train steps of the run'),
    'log_every': (REQUIRED, 'steps between train metric rows'),
    'eval_every': (REQUIRED, 'steps between evaluations'),
    'checkpoint_every': (REQUIRED, 'steps between checkpoints'),
    'max_to_keep': (REQUIRED, 'checkpoints kept (the newest)'),
    'mesh': (REQUIRED, 'sizes of the data, fsdp and tensor axes (-1: the '
             'remaining devices)'),
    'task': ('classification', 'what is optimised: classification | lm | '
             'mlm | gan'),
    'parallelism': ('jit', "'jit' over the mesh | 'pmap' (data parallel "
                    'only)'),
    'microbatches': (1, 'gradient accumulation: microbatches per step'),
    'steps_per_dispatch': (1, 'train steps per compiled call, for tiny '
                           'steps'),
    'compute_dtype': (None, "None (the params' float32) | 'bfloat16' | "
                      "'float16'"),
    'nan_policy': ('stop', "a non-finite update: 'stop' the run | 'skip' "
                   'it'),
    'logical_axis_rules': (None, 'logical axis -> mesh axis pairs (None: '
                           'parallel.mesh.DEFAULT_RULES)'),
    'init_from': (None, "a run's workdir, step directory or hf:DIR whose "
                  'params start a fresh run'),
    'init_skip': (None, 'a regex of parameter names init_from leaves as '
                  "initialised, e.g. '^head/'"),
    'eval_batch_size': (None, 'examples per eval batch (None: batch_size)'),
    'evals': ({}, 'evaluators besides the task metrics, by name with '
              'options (bigml_jax.evaluators)'),
    'sampling': ({}, "a language model's samples at each eval: "
                 'num_samples, temperature, top_k, top_p (tasks.lm)'),
    'gan': ({}, "a GAN's loss, n_critic, ema_decay, quality... (tasks.gan)"),
    'early_stopping': ({'metric': None, 'mode': 'max', 'patience': 5,
                        'min_delta': 0.0},
                       'end the run at the eval where `metric` (an eval '
                       'metric; None: off) has not improved by more than '
                       'min_delta for `patience` evals'),
    'keep_best': ({'metric': None, 'mode': 'max'},
                  'keep the checkpoint of the best eval `metric` (None: '
                  'off) beside the newest; --step=best loads it'),
}
# The types of fields whose default is None, so that `--config.KEY=VALUE`
# can set them (ml_collections overrides only fields a config has).
_NONE_TYPES = {'compute_dtype': str, 'init_from': str, 'init_skip': str,
               'eval_batch_size': int, 'logical_axis_rules': tuple}
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


def _default(name: str):
  default = FIELDS[name][0]
  if default is None:
    return ml_collections.config_dict.placeholder(_NONE_TYPES[name])
  return (ml_collections.ConfigDict(default) if isinstance(default, dict)
          else default)


def defaults() -> ml_collections.ConfigDict:
  """A config holding every optional field at its default."""
  return ml_collections.ConfigDict({
      name: _default(name) for name, (default, _) in FIELDS.items()
      if default is not REQUIRED})


def with_defaults(config: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """A copy of `config` with the optional fields it leaves out at their
  defaults (the optimizer's too): what a run reads."""
  full = copy.deepcopy(config)
  with full.unlocked():
    for name, (default, _) in FIELDS.items():
      if default is not REQUIRED and name not in full:
        full[name] = _default(name)
    if 'optimizer' in full:
      for name, default in OPTIMIZER_DEFAULTS.items():
        if name not in full.optimizer:
          full.optimizer[name] = default
  return full


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError with the fix when `config` cannot describe a run."""
  for name, (default, _) in FIELDS.items():
    if default is REQUIRED:
      _get(config, name)
  for field in ('model.name', 'dataset.name', 'dataset.train_split',
                'dataset.eval_split', 'optimizer.name',
                'optimizer.learning_rate', 'mesh.data', 'mesh.fsdp',
                'mesh.tensor'):
    _get(config, field)
  unknown = sorted(set(config) - set(FIELDS))
  if unknown:
    raise ConfigError(f'config has no field(s) {", ".join(unknown)}; its '
                      f'fields are {", ".join(sorted(FIELDS))}')
  config = with_defaults(config)
  opt = config.optimizer
  check_choice('optimizer.name', opt.name, OPTIMIZERS)
  check_choice('optimizer.schedule', opt.schedule, SCHEDULES)
  for field in ('batch_size', 'total_steps', 'log_every', 'eval_every',
                'checkpoint_every', 'max_to_keep'):
    value = _get(config, field)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f'{field} must be a positive integer, got {value!r}')
  for field, allowed in (('parallelism', ('jit', 'pmap')),
                         ('nan_policy', ('stop', 'skip')),
                         ('compute_dtype', (None, '', 'float32', 'bfloat16',
                                            'float16'))):
    if config[field] not in allowed:  # None and '' go unnamed: unset.
      check_choice(field, config[field], [a for a in allowed if a])
  if (not isinstance(config.seed, numbers.Integral) or
      isinstance(config.seed, bool) or not 0 <= config.seed < 2**32):
    # The data order takes a 32-bit seed: larger ones would repeat others'.
    raise ConfigError(f'seed must be an integer in [0, 2**32), got '
                      f'{config.seed!r}')
  microbatches = config.microbatches
  if not isinstance(microbatches, int) or microbatches <= 0:
    raise ConfigError(f'microbatches must be a positive integer, got '
                      f'{microbatches!r}')
  k = config.steps_per_dispatch
  if not isinstance(k, int) or k <= 0:
    raise ConfigError(f'steps_per_dispatch must be a positive integer, got '
                      f'{k!r}')
  if k > 1:
    if config.parallelism == 'pmap':
      raise ConfigError('steps_per_dispatch > 1 needs parallelism=jit; set '
                        'steps_per_dispatch=1 for pmap')
    for field in ('total_steps', 'log_every', 'eval_every',
                  'checkpoint_every'):
      if config[field] % k:
        raise ConfigError(
            f'{field} {config[field]} is not a multiple of steps_per_dispatch '
            f'{k}: logs, evals and checkpoints fall between dispatches; use '
            f'a multiple of {k}')
  for section in ('early_stopping', 'keep_best'):
    _check_watch(section, config[section])
  if not 0 <= opt.warmup_steps <= config.total_steps:
    raise ConfigError(f'optimizer.warmup_steps {opt.warmup_steps} must be in '
                      f'[0, total_steps={config.total_steps}]')
  # A misspelt optimizer field, before any data is prepared. Sections inside
  # it are per-network overrides, which their task checks (the GAN's).
  optimizer_fields({k: v for k, v in opt.items()
                    if not isinstance(v, ml_collections.ConfigDict)})


def _check_watch(section: str, options) -> None:
  """early_stopping / keep_best: fields, mode and ranges."""
  fields = dict(FIELDS[section][0])
  unknown = sorted(set(options) - set(fields))
  if unknown:
    raise ConfigError(f'{section} has no field(s) {", ".join(unknown)}; its '
                      f'fields are {", ".join(fields)}')
  options = {**fields, **dict(options)}
  if options['metric'] is None:
    return
  if options['mode'] not in ('min', 'max'):
    raise ConfigError(f"{section}.mode {options['mode']!r} is unknown; use "
                      "'min' (a loss) or 'max' (an accuracy)")
  if section == 'early_stopping' and (
      not isinstance(options['patience'], int) or options['patience'] < 1 or
      options['min_delta'] < 0):
    raise ConfigError(f'early_stopping.patience must be a positive integer '
                      f'and min_delta >= 0, got {options["patience"]!r} and '
                      f'{options["min_delta"]!r}')


# Fields a resumed run may change: when and how often things happen, where
# the data lives and how the work is spread over devices. Every other field
# shapes the numbers (the model, the optimizer, the seed, the batch and so
# the data order, which the iterator state counts in batches).
RESUMABLE_FIELDS = (
    'total_steps', 'log_every', 'eval_every', 'checkpoint_every',
    'max_to_keep', 'dataset.data_dir', 'mesh', 'logical_axis_rules',
    'parallelism', 'microbatches', 'steps_per_dispatch', 'nan_policy',
    'init_from', 'init_skip', 'sampling', 'early_stopping', 'keep_best',
    'model.remat', 'model.attention_impl',
)
CONFIG_FILE = 'config.json'
HISTORY_DIR = 'configs'


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def _resumable(field: str) -> bool:
  return any(field == f or field.startswith(f + '.') for f in RESUMABLE_FIELDS)


def check_resume(config: ml_collections.ConfigDict, workdir: str,
                 reached_step: int) -> None:
  """Raises ConfigError if `config` changes a field of the run saved in
  `workdir` that a resumed run must keep (see RESUMABLE_FIELDS), naming
  each with its old and new value, or if total_steps is below the step the
  run has reached. A workdir without config.json passes."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = _flat(_as_json(with_defaults(
          ml_collections.ConfigDict(json.load(f)))))
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path} cannot be read ({e}); it records the run that '
                      'wrote the checkpoints: restore it, or pass a new '
                      '--workdir') from None
  new = _flat(_as_json(with_defaults(config)))
  changed = [f'{k} {saved.get(k)!r} -> {new.get(k)!r}'
             for k in sorted(set(saved) | set(new))
             if saved.get(k) != new.get(k) and not _resumable(k)]
  if changed:
    raise ConfigError(
        f'the config differs from the run in {workdir} (at step '
        f'{reached_step}) in fields a resumed run must keep: '
        f'{listing(changed, 4, "; ")}; pass '
        'a new --workdir for a new run, or the values of its config.json')
  if config.total_steps < reached_step:
    raise ConfigError(
        f'the run in {workdir} has reached step {reached_step}, past '
        f'total_steps {config.total_steps}; pass total_steps >= '
        f'{reached_step} to continue it, or a new --workdir')


def save_config(config: ml_collections.ConfigDict, workdir: str,
                step: int = 0) -> str:
  """Writes the resolved config to `workdir/config.json` (all-or-nothing)
  and a copy to `workdir/configs/`, named by the step the run starts from
  and the time, so every start of a resumed run stays auditable. Returns
  config.json's path."""
  text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
  history = os.path.join(workdir, HISTORY_DIR)
  os.makedirs(history, exist_ok=True)
  stamp = time.strftime('%Y%m%d-%H%M%S')
  workdir_lib.write_atomically(
      os.path.join(history, f'step{step:08d}-{stamp}.json'), text)
  path = os.path.join(workdir, CONFIG_FILE)
  workdir_lib.write_atomically(path, text)
  return path


def load_saved_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads back what `save_config` wrote (for scripts and notebooks)."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return ml_collections.ConfigDict(json.load(f))
