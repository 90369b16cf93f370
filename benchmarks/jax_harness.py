"""The framework's train step as the loop builds it, and how it is timed.

Imports no config or data code (no ml_collections, grain or TFDS), so the
gpu suite can use it on GPU images.
"""

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.training import perf
from bigml_jax.training import step as step_lib
from bigml_jax.training import state as state_lib

from benchmarks import timing

MESH_1 = {'data': 1, 'fsdp': 1, 'tensor': 1}


@dataclasses.dataclass
class Bench:
  """A compiled-ready step with its first state and a device batch."""
  step: Any          # jitted train_step(state, batch) -> (state, metrics)
  state: state_lib.TrainState
  batch: dict
  num_params: int


def build(task, tx, batch: dict, *, train_step=None, mesh=None,
          seed: int = 0) -> Bench:
  """The loop's recipe: `state.sharded_init` -> `make_train_step` (or the
  task's own) -> `jit_train_step`."""
  mesh = mesh or mesh_lib.make_mesh(MESH_1, jax.devices()[:1])
  init, abstract, shardings = state_lib.sharded_init(task, tx, batch, mesh)
  state = init(jax.random.PRNGKey(seed))
  if train_step is None:
    train_step = (task.make_train_step(tx) or
                  step_lib.make_train_step(task, tx))
  step = step_lib.jit_train_step(train_step, shardings, mesh)
  device_batch = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      abstract.params))
  return Bench(step, state, device_batch, num_params)


class Runner:
  """`bench.step` compiled ahead of time; `runner(n)` runs n steps on the
  fixed batch, carrying the state, and returns once they are done."""

  def __init__(self, bench: Bench, compiler_options=perf.compiler_options):
    start = time.perf_counter()
    lowered = bench.step.lower(bench.state, bench.batch)
    if callable(compiler_options):  # Options chosen from the lowered step,
      compiler_options = compiler_options(lowered)  # as the loop does.
    self.compiled = lowered.compile(compiler_options=compiler_options)
    self.compile_s = time.perf_counter() - start
    self.state, self.batch, self.metrics = bench.state, bench.batch, None

  def __call__(self, n: int) -> None:
    for _ in range(n):
      self.state, self.metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, self.metrics))

  def loss(self) -> float:
    """The last step's mean loss (D's, for a GAN)."""
    m = jax.device_get(self.metrics)
    loss_sum = m['loss_sum'] if 'loss_sum' in m else m['d_loss_sum']
    return float(loss_sum) / max(float(m['count']), 1.0)


def time_bench(bench: Bench, *, examples_per_step: int, windows: int = 5,
               window_s: float = 1.0,
               compiler_options=perf.compiler_options) -> dict:
  """Compiles `bench.step`, then times it (timing.measure) on its fixed
  device batch; also the compile time, XLA's temporaries and the last
  step's loss."""
  run = Runner(bench, compiler_options)
  memory = run.compiled.memory_analysis()
  first_step_s = timing.timed(lambda: run(1))
  stats = timing.measure(run, examples_per_step=examples_per_step,
                         windows=windows, window_s=window_s)
  return dict(stats, num_params=bench.num_params, compile_s=run.compile_s,
              first_step_s=first_step_s, loss=run.loss(),
              temp_mb=memory.temp_size_in_bytes / 1e6 if memory else None)
