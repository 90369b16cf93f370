"""The trainer: the train state and the running metric sums on device, and
the compiled step that advances both (nanodo's shape, jit over the mesh).

The step adds its metrics to the sums inside the compiled call (one
dispatch a step); `take_sums` hands the loop a log window's sums and starts
new ones, without waiting for the device. `training.pmap.PmapTrainer` is
the same object for parallelism='pmap'.
"""

from typing import Any

import jax

from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.training import perf
from bigml_jax.training import step as step_lib


def train_step_of(run, *, axis_name: str | None = None):
  """The run's train step, not yet compiled: the task's own, or the default
  step with the config's microbatches and compute_dtype."""
  own = run.task.make_train_step(run.tx)
  if own is not None:
    return own
  return step_lib.make_train_step(
      run.task, run.tx, microbatches=run.config.microbatches,
      compute_dtype=run.config.compute_dtype or None, axis_name=axis_name)


class Trainer:
  """jit over the run's mesh; `steps_per_dispatch` K > 1 runs K steps per
  call on batches stacked [K, B, ...]."""

  def __init__(self, run, first_local_batch: dict):
    self.state = run.state
    self.per_call = run.config.steps_per_dispatch
    mesh = run.mesh
    # Jitted, the step is traced once for the summing step and the shapes.
    step_fn = jax.jit(train_step_of(run))
    self._input_sharding = mesh_lib.batch_sharding(mesh, self.per_call)
    first = self.to_device(first_local_batch)
    one_step = first if self.per_call == 1 else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), first)
    metric_shapes = jax.eval_shape(step_fn, self.state, one_step)[1]
    self._new_sums = jax.jit(lambda: step_lib.no_metrics(metric_shapes),
                             out_shardings=mesh_lib.replicated(mesh))
    self._sums = self._new_sums()
    step = step_lib.jit_summing_step(step_fn, run.shardings, mesh,
                                     self.per_call)
    # Compiled ahead, to show memory use before the first step.
    self._step, self.flops = perf.compile_and_report(step, self.state,
                                                     self._sums, first)
    if self.per_call > 1:  # XLA's cost analysis counts a loop's body once.
      self.flops = None
    self.first_batch = first

  def to_device(self, local_batch: dict) -> Any:
    return multihost.jit_batch(local_batch, self._input_sharding)

  def step(self, batch: Any) -> None:
    self.state, self._sums = self._step(self.state, self._sums, batch)

  def sums(self) -> Any:
    """The running sums, still on device (to wait on)."""
    return self._sums

  def take_sums(self) -> Any:
    """The sums since the last call (on device); the next ones start at 0."""
    sums, self._sums = self._sums, self._new_sums()
    return sums

  def host_state(self):
    """The state as jit, evaluators and Orbax take it."""
    return self.state

  def step_number(self) -> int:
    return int(self.state.step)


def make_trainer(run, first_local_batch: dict):
  """The trainer for the run's parallelism."""
  if run.config.parallelism == 'pmap':
    from bigml_jax.training import pmap  # pylint: disable=g-import-not-at-top
    return pmap.PmapTrainer(run, first_local_batch)
  return Trainer(run, first_local_batch)
