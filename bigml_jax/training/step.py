"""Train and eval steps, compiled with `jax.jit` over the mesh.

A step is a pure function (state, batch) -> (state, metrics). Metrics are sums
(see the task), so the loop can add them up on device between log steps and
never wait on the host.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.training.state import TrainState

Metrics = dict[str, jax.Array]


def make_train_step(task: Any, tx: optax.GradientTransformation):
  """Returns train_step(state, batch) -> (state, metrics), not yet jitted."""

  def train_step(state: TrainState, batch) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      return task.loss_and_metrics(params, batch, rng, train=True)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm_sum=optax.tree.norm(grads),
                   steps=jnp.ones((), jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(task: Any):
  """Returns eval_step(params, batch) -> metric sums, not yet jitted."""

  def eval_step(params, batch) -> Metrics:
    _, metrics = task.loss_and_metrics(params, batch, jax.random.key(0),
                                       train=False)
    return metrics

  return eval_step


def jit_train_step(train_step, state_shardings, mesh: Mesh):
  """jit with the state's shardings in and out, state donated (updated in
  place), batch split over the data-parallel axes, metrics replicated."""
  return jax.jit(
      train_step,
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0)


def jit_eval_step(eval_step, param_shardings, mesh: Mesh):
  return jax.jit(
      eval_step,
      in_shardings=(param_shardings, mesh_lib.batch_sharding(mesh)),
      out_shardings=mesh_lib.replicated(mesh))


@jax.jit
def add_metrics(total: Metrics, new: Metrics) -> Metrics:
  """Running sums, on device: dispatching this never blocks the host."""
  return jax.tree.map(jnp.add, total, new)

