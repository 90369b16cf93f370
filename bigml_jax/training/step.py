"""Train and eval steps: `jax.jit` over the mesh (main path) or `jax.pmap`.

A step is a pure function (state, batch) -> (state, metrics). Metrics are sums
(see the task), so they add up on device between log steps and the host never
waits: the loop runs `summing_metrics(step)`, which adds them to running sums
inside the compiled step. Options shared by both paths:
  microbatches: gradient accumulation, k microbatches scanned inside the step;
  compute_dtype: e.g. bfloat16 forward/backward over float32 params and
    optimizer state (params are cast per step, gradients flow back in f32);
  a non-finite loss, gradient or updated parameter never reaches the state:
    the update is skipped and counted ('nonfinite', 'min_nonfinite_step'),
    so the loop can stop with the step's number or carry on, by config.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from bigml_jax.evaluators.metrics import TaskMetrics
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.tasks.base import Task, cast_floats, guarded_update
from bigml_jax.training.state import TrainState

Metrics = dict[str, jax.Array]


def _split_microbatches(batch, k: int):
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f'batch of {x.shape[0]} does not split into {k} '
                       'microbatches; make batch_size a multiple of '
                       'microbatches x data-parallel size')
    return x.reshape(k, x.shape[0] // k, *x.shape[1:])
  return jax.tree.map(split, batch)


def _check_task(task: Any) -> None:
  # A Flax module has no loss; its own error would be about setup().
  if not isinstance(task, Task):
    raise TypeError(
        f'steps take a task (a model with its loss and metrics: a '
        f'bigml_jax.tasks.base.Task), not a {type(task).__name__}; wrap a '
        "module as bigml_jax.ClassificationTask(model, input_key='image')")


def make_grad_fn(task: Any, *, microbatches: int = 1, compute_dtype=None):
  """Returns grad_fn(params, batch, rng) -> (grads, metric sums).

  With k microbatches, gradients are the mean of the k microbatch gradients
  (each a mean over its examples), which equals the gradient over the whole
  batch; metric sums add up exactly.
  """
  _check_task(task)

  def loss_fn(params, batch, rng):
    if compute_dtype is not None:
      params = cast_floats(params, compute_dtype)
      batch = cast_floats(batch, compute_dtype)
    return task.loss_and_metrics(params, batch, rng, train=True)

  grad = jax.grad(loss_fn, has_aux=True)
  if microbatches == 1:
    return grad

  def grad_fn(params, batch, rng):
    def accumulate(carry, xs):
      i, micro = xs
      g, m = grad(params, micro, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (g, m)), None

    micro = _split_microbatches(batch, microbatches)
    zeros = jax.tree.map(
        jnp.zeros_like, jax.eval_shape(grad, params,
                                       jax.tree.map(lambda x: x[0], micro),
                                       rng))
    (g, m), _ = jax.lax.scan(accumulate, zeros,
                             (jnp.arange(microbatches), micro))
    return jax.tree.map(lambda x: x / microbatches, g), m

  return grad_fn


def make_train_step(task: Any, tx: optax.GradientTransformation, *,
                    microbatches: int = 1, compute_dtype=None,
                    axis_name: str | None = None):
  """Returns train_step(state, batch) -> (state, metrics), not yet compiled.

  `axis_name` is the pmap axis: gradients are averaged and metric sums added
  over it. Under jit the mesh shardings do that implicitly.
  """
  grad_fn = make_grad_fn(task, microbatches=microbatches,
                         compute_dtype=compute_dtype)

  def train_step(state: TrainState, batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:  # Per-device dropout masks, as in pmap code.
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    grads, metrics = grad_fn(state.params, batch, rng)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      metrics = jax.lax.psum(metrics, axis_name)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return guarded_update(state, params, opt_state, grad_norm, metrics,
                          metrics['loss_sum'])

  return train_step


def make_eval_step(task: Any, *, compute_dtype=None):
  """Returns eval_step(params, batch) -> metric sums, not yet compiled: the
  task's metrics in eval mode (`evaluators.TaskMetrics`)."""
  _check_task(task)
  metrics = TaskMetrics(task, compute_dtype=compute_dtype)
  return lambda params, batch: metrics.sums(params, batch, jax.random.key(0))


def jit_train_step(train_step, state_shardings, mesh: Mesh):
  """jit with the state's shardings in and out, state donated (updated in
  place), batch split over the data-parallel axes, metrics replicated."""
  return jax.jit(
      train_step,
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0)


def jit_summing_step(train_step, state_shardings, mesh: Mesh,
                     steps_per_call: int = 1):
  """`summing_metrics(train_step)` jitted as `jit_train_step` does, with the
  sums replicated and donated like the state. With `steps_per_call` K > 1,
  `summing_steps(train_step)`: batches [K, B, ...], B split as usual."""
  replicated = mesh_lib.replicated(mesh)
  step = (summing_metrics(train_step) if steps_per_call == 1 else
          summing_steps(train_step))
  batch = mesh_lib.batch_sharding(mesh, steps_per_call)
  return jax.jit(
      step, in_shardings=(state_shardings, replicated, batch),
      out_shardings=(state_shardings, replicated), donate_argnums=(0, 1))


PMAP_AXIS = 'batch'


@jax.jit
def add_metrics(total: Metrics, new: Metrics) -> Metrics:
  """Running sums (minima for 'min_*'), on device: never blocks the host."""
  return {k: (jnp.minimum if k.startswith('min_') else jnp.add)(total[k], new[k])
          for k in total}


def no_metrics(shapes: dict[str, jax.ShapeDtypeStruct]) -> Metrics:
  """The sums `add_metrics` leaves unchanged: zeros, and the dtype's
  largest value for 'min_*'."""
  def identity(name, s):
    if not name.startswith('min_'):
      return jnp.zeros(s.shape, s.dtype)
    big = (jnp.iinfo(s.dtype).max if jnp.issubdtype(s.dtype, jnp.integer)
           else jnp.inf)
    return jnp.full(s.shape, big, s.dtype)
  return {k: identity(k, s) for k, s in shapes.items()}


def summing_metrics(train_step):
  """(state, batch) -> (state, metrics) as (state, sums, batch) -> (state,
  sums + metrics). The loop's running sums are then added by the step
  itself: one dispatch per step instead of two, which cost a
  sub-millisecond step ~5% (benchmarks/NOTES.md). Jit it with the sums
  donated (argument 1) so they are updated in place."""

  def step(state, sums, batch):
    state, metrics = train_step(state, batch)
    return state, add_metrics(sums, metrics)

  return step


def summing_steps(train_step):
  """`summing_metrics(train_step)` over batches stacked [K, B, ...]: K steps
  in one compiled loop, so the host dispatches, reads and copies once per K
  steps. For steps so short that those per-call costs show: 8 mlp steps a
  call ran at 0.96-1.00 of the bare step, one a call at 0.87-0.90
  (benchmarks/NOTES.md)."""
  summing = summing_metrics(train_step)

  def steps(state, sums, batches):
    def body(carry, batch):
      return summing(*carry, batch), None
    (state, sums), _ = jax.lax.scan(body, (state, sums), batches)
    return state, sums

  return steps
