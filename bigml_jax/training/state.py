"""TrainState: everything a step reads and writes, as one explicit pytree,
and how it is created already sharded over a mesh."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from bigml_jax.parallel import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  """params, optimizer state, step and the run's base rng.

  The optimizer (an optax transformation) is not part of the state: steps
  close over it, so the state is pure data that checkpoints as-is. Per-step
  randomness is `fold_in(rng, step)`, which makes a resumed run draw the same
  dropout masks as an uninterrupted one.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def sharded_init(task: Any, tx: optax.GradientTransformation,
                 example_batch: Any, mesh: jax.sharding.Mesh,
                 rules=mesh_lib.DEFAULT_RULES
                 ) -> tuple[Callable[[jax.Array], TrainState], TrainState,
                            TrainState]:
  """The train state as the loop creates it, for loops of your own.

  Shapes come first (`jax.eval_shape`: no FLOPs, no memory), then each
  leaf's sharding from its parameter's logical axis names, then an init
  compiled to write every parameter straight into its shards, so a model
  larger than one device's memory can be created at all.

  Args:
    task: defines `init(rng, batch)` -> params (e.g. `ClassificationTask`).
    tx: the optax transformation whose state the train state carries.
    example_batch: a batch of the shapes the step will see (any batch size;
      only its first example is used).
    mesh: the device mesh.
    rules: logical axis name -> mesh axis pairs.

  Returns:
    (init, abstract, shardings): `init(rng)` (a `jax.random.PRNGKey` or
    `jax.random.key`) -> a TrainState laid out by `shardings`; `abstract`,
    its ShapeDtypeStructs (e.g. a checkpoint's restore target with
    `checkpoint.abstract_with_shardings`).
  """
  example = jax.tree.map(lambda x: x[:1], example_batch)

  def init_state(rng):
    param_rng, step_rng = jax.random.split(rng)
    params = task.init(param_rng, example)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=step_rng)

  boxed = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
  init_raw = jax.jit(lambda rng: nn.unbox(init_state(rng)),
                     out_shardings=shardings)

  def init(rng: jax.Array) -> TrainState:
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
      # A jax.random.key: the state carries its raw key data, as `abstract`
      # and the loop's states do.
      rng = jax.random.key_data(rng)
    return init_raw(rng)

  return init, nn.unbox(boxed), shardings
