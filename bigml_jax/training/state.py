"""TrainState: everything a step reads and writes, as one explicit pytree."""

from typing import Any

import flax.struct
import jax


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
