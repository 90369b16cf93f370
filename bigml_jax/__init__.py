"""bigml_jax: a JAX/Flax research framework for accelerators.

The public surface, each piece usable alone:
  train_and_evaluate     one run from a config (bigml_jax.training.loop)
  build_model, MODELS    Flax Linen modules by name (bigml_jax.models)
  make_optimizer         optax transformation from config.optimizer
  TrainState             the explicit train-state pytree
  make_train_step, make_eval_step   pure steps to jit over a mesh
  make_mesh              ('data', 'fsdp', 'tensor') mesh from config.mesh
  ConfigError            raised for mistakes a user can fix
  Preempted, NonFiniteError   how a run that must stop early ends
"""

from bigml_jax.config import ConfigError, validate_config
from bigml_jax.models import MODELS, build_model
from bigml_jax.parallel.mesh import make_mesh
from bigml_jax.tasks import ClassificationTask
from bigml_jax.training.loop import NonFiniteError, Preempted, train_and_evaluate
from bigml_jax.training.optim import make_optimizer
from bigml_jax.training.state import TrainState
from bigml_jax.training.step import make_eval_step, make_train_step

__all__ = [
    'ClassificationTask', 'ConfigError', 'MODELS', 'NonFiniteError', 'Preempted',
    'TrainState', 'build_model',
    'make_eval_step', 'make_mesh', 'make_optimizer', 'make_train_step',
    'train_and_evaluate', 'validate_config',
]
