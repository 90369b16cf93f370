"""parallelism='pmap': the Trainer of training/trainer.py for pmap-era code.

Data parallel only, as in flax's ImageNet example: each process runs one
pmap over its local devices with a replica of the state on each, feeds them
its slice of the global batch, and the step averages gradients (pmean) and
adds metrics (psum) over every device of every process. Checkpoints and
evaluation take the state as the jit path lays it out: `host_state` builds
those global arrays from the local replicas, without crossing hosts.
"""

from typing import Any

import jax
import numpy as np

from bigml_jax.training import step as step_lib
from bigml_jax.training.trainer import train_step_of


def _replica(x) -> jax.Array:
  """One local device's copy of a pmap output [devices, ...], still on
  that device (reading it would wait for the step)."""
  return x.addressable_shards[0].data.reshape(x.shape[1:])


class PmapTrainer:
  """The Trainer interface over `jax.pmap`."""

  def __init__(self, run, first_local_batch: dict):
    self._shardings = run.shardings
    local = list(run.mesh.local_devices)
    self._n = len(local)
    # A replica per local device, from this process's copy of the state.
    self.state = jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(x.addressable_shards[0].data),
                                  (self._n,) + x.shape), run.state)
    step_fn = jax.jit(train_step_of(run, axis_name=step_lib.PMAP_AXIS))
    self.first_batch = self.to_device(first_local_batch)
    # Several processes: pmap spans every process's devices by itself.
    self._step = jax.pmap(step_lib.summing_metrics(step_fn),
                          axis_name=step_lib.PMAP_AXIS, donate_argnums=(0, 1),
                          devices=local if jax.process_count() == 1 else None)
    metric_shapes = jax.eval_shape(
        jax.vmap(step_fn, axis_name=step_lib.PMAP_AXIS), self.state,
        self.first_batch)[1]
    # pmap copies these to each device at every call that takes them.
    self._no_sums = jax.device_get(step_lib.no_metrics(metric_shapes))
    self._sums = self._no_sums
    self.flops = None
    self.per_call = 1

  def to_device(self, local_batch: dict) -> Any:
    return jax.tree.map(lambda x: x.reshape(self._n, -1, *x.shape[1:]),
                        local_batch)

  def step(self, batch: Any) -> None:
    self.state, self._sums = self._step(self.state, self._sums, batch)

  def sums(self) -> Any:
    return self._sums

  def take_sums(self) -> Any:
    sums, self._sums = self._sums, self._no_sums
    return jax.tree.map(_replica, sums)

  def host_state(self):
    """The state as global arrays laid out like the jit path's, made from
    the replicas on this process's devices."""
    def to_global(x, sharding):
      if isinstance(x, np.ndarray):  # Not stepped yet: as restored.
        return jax.make_array_from_process_local_data(sharding, x[0])
      shards = {s.device: s.data for s in x.addressable_shards}
      return jax.make_array_from_single_device_arrays(
          x.shape[1:], sharding,
          [shards[d].reshape(x.shape[1:]) for d in sharding.addressable_devices])
    return jax.tree.map(to_global, self.state, self._shardings)

  def step_number(self) -> int:
    step = self.state.step
    return int(step[0] if isinstance(step, np.ndarray) else _replica(step))
