"""The Task contract: what the loop, the steps and the evaluators may ask of a
task, written down once, with the defaults a task inherits.

Every task provides
  init(rng, batch) -> params             (boxed with logical axis names)
  loss_and_metrics(params, batch, rng, train) -> (loss, metric sums)
  summarize(sums) -> {name: mean}
and may override
  make_optimizer(config) -> (tx, schedule)   default: optim.make_optimizer
  make_train_step(tx) -> step or None        default None: the loop's step
  samples(params, rng) -> array | None       default None: nothing to show
  evaluators(config) -> {name: options}      default {}: only its metrics
and declares
  counts: 'examples' | 'tokens'              what the 'count' sum counts
  num_samples: int                           samples drawn at each eval

A train step, the default one (training.step) or a task's own, reports
besides the task's metric sums 'steps', 'grad_norm_sum', 'nonfinite' and
'min_nonfinite_step' (the first step, 1-based, whose update was skipped as
non-finite, or NO_STEP): `guarded_update` makes them, for both.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigml_jax.optim import make_optimizer

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# 'min_nonfinite_step' of a step whose update was finite: the identity of min.
NO_STEP = int(np.iinfo(np.int32).max)


class Task:
  """Base of every task; subclasses are frozen dataclasses."""

  counts: str = 'examples'
  num_samples: int = 0

  def init(self, rng: jax.Array, batch: Batch) -> Any:
    raise NotImplementedError

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, Metrics]:
    raise NotImplementedError

  def summarize(self, sums: dict[str, Any]) -> dict[str, float]:
    raise NotImplementedError

  def make_optimizer(self, config) -> tuple[Any, optax.Schedule]:
    """The optax transformation the state carries, and the schedule whose
    learning rate the loop logs."""
    return make_optimizer(config.optimizer, config.total_steps)

  def make_train_step(self, tx) -> Any:
    """A train step of the task's own, (state, batch) -> (state, metrics)
    reporting `guarded_update`'s metrics; None for the loop's default step
    (which alone implements microbatches, compute_dtype and pmap)."""
    del tx
    return None

  def samples(self, params: Any, rng: jax.Array) -> jax.Array | None:
    """What the loop shows at each eval when num_samples > 0: token ids
    [N, T] for text, images [N, H, W, C] in [0, 1] otherwise."""
    del params, rng
    return None

  def evaluators(self, config) -> dict[str, dict[str, Any]]:
    """Evaluators (bigml_jax.evaluators) the task asks for besides its own
    metrics, by name with their options, when config.evals is empty."""
    del config
    return {}


def cast_floats(tree: Any, dtype) -> Any:
  """`tree` with its floating-point leaves in `dtype` (compute_dtype: a
  step's params and batch), other leaves as they are."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      tree)


def guarded_update(state, params: Any, opt_state: Any, grad_norm: jax.Array,
                   metrics: Metrics, loss_sum: jax.Array):
  """`state` one step on, with `params` and `opt_state` if the step was
  finite (loss, gradient norm and the updated parameters), else as it was;
  and `metrics` with the loop's step metrics added.

  An update can overflow even from finite gradients (a huge step size), so
  the updated parameters are checked too. A skipped update is counted, and
  its step reported, so the loop can stop with the step's number or carry
  on, by config.
  """
  finite = (jnp.isfinite(grad_norm) & jnp.isfinite(loss_sum) &
            jnp.isfinite(optax.tree.norm(params)))
  keep = lambda new, old: jax.tree.map(
      lambda n, o: jnp.where(finite, n, o), new, old)
  metrics = dict(
      metrics, grad_norm_sum=jnp.where(finite, grad_norm, 0.0),
      steps=jnp.ones((), jnp.float32),
      nonfinite=(~finite).astype(jnp.float32),
      min_nonfinite_step=jnp.where(finite, NO_STEP, state.step + 1))
  return state.replace(step=state.step + 1,
                       params=keep(params, state.params),
                       opt_state=keep(opt_state, state.opt_state)), metrics
