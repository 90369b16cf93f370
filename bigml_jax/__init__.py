"""bigml_jax: a JAX/Flax research framework for accelerators.

The public surface, each piece usable alone:
  train_and_evaluate     one run from a config (bigml_jax.training.loop)
  build_run, load_run, Run   a run assembled from its config, to train or
                         to use once trained (bigml_jax.training.run)
  Task                   the contract every task keeps (bigml_jax.tasks.base)
  build_model, MODELS    Flax Linen modules by name (bigml_jax.models)
  make_optimizer         optax transformation from config.optimizer
  TrainState             the explicit train-state pytree
  ClassificationTask     a model with its loss and metrics, for the steps
  sharded_init           a TrainState made directly in its shards on a mesh
  make_train_step, make_eval_step   pure steps to jit over a mesh
  jit_train_step         a train step compiled for the state's shardings
  make_mesh              ('data', 'fsdp', 'tensor') mesh from config.mesh
  ConfigError            raised for mistakes a user can fix
  Preempted, NonFiniteError   how a run that must stop early ends

Names are imported on first use (PEP 562), so importing one piece, e.g.
`bigml_jax.models`, loads neither the loop nor the data and config packages
(grain, tensorflow_datasets, ml_collections) that GPU images may lack.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    'ClassificationTask': 'bigml_jax.tasks',
    'ConfigError': 'bigml_jax.errors',
    'MODELS': 'bigml_jax.models',
    'NonFiniteError': 'bigml_jax.training.preemption',
    'Preempted': 'bigml_jax.training.preemption',
    'Run': 'bigml_jax.training.run',
    'Task': 'bigml_jax.tasks.base',
    'build_run': 'bigml_jax.training.run',
    'load_run': 'bigml_jax.training.run',
    'TrainState': 'bigml_jax.training.state',
    'build_model': 'bigml_jax.models',
    'jit_train_step': 'bigml_jax.training.step',
    'make_eval_step': 'bigml_jax.training.step',
    'make_mesh': 'bigml_jax.parallel.mesh',
    'make_optimizer': 'bigml_jax.optim',
    'make_train_step': 'bigml_jax.training.step',
    'sharded_init': 'bigml_jax.training.state',
    'train_and_evaluate': 'bigml_jax.training.loop',
    'validate_config': 'bigml_jax.config',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value  # Later look-ups skip __getattr__.
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
