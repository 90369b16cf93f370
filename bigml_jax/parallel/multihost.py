"""Global arrays from process-local data, so one program runs on many hosts.

Each process loads only its slice of the global batch; `global_batch` stitches
the slices into one `jax.Array` laid out by a sharding. On one process this is
a plain (sharded) device transfer.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding


def global_batch(local_batch: dict[str, np.ndarray],
                 sharding: NamedSharding) -> dict[str, jax.Array]:
  """[local_B, ...] numpy arrays on each process -> [global_B, ...] arrays."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def is_primary() -> bool:
  """True on the process that writes logs, metrics and config files."""
  return jax.process_index() == 0
