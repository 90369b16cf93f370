"""One pass over the eval split with every evaluator of the run, compiled
into one function per batch; sums on device, summaries on the host."""

from collections.abc import Callable

import jax
import numpy as np

from bigml_jax.data import pipeline
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.training import step as step_lib


class Evaluation:
  """`evaluation(params)` -> {metric: value} of the run's evaluators (their
  names merged; the task metrics' loss and accuracy first), or None if
  `interrupted()` turned true between batches."""

  def __init__(self, run, interrupted: Callable[[], bool] = lambda: False):
    self._run, self._interrupted = run, interrupted
    evaluators = run.evaluators

    def sums(params, batch):
      rng = jax.random.key(0)  # Each evaluator keys its draws on the batch.
      return {name: ev.sums(params, batch, rng)
              for name, ev in evaluators.items()}

    self._batch_sharding = mesh_lib.batch_sharding(run.mesh)
    self._sums = jax.jit(
        sums, in_shardings=(run.shardings.params, self._batch_sharding),
        out_shardings=mesh_lib.replicated(run.mesh))
    # XLA:CPU over several host devices deadlocks in a collective when
    # ~100 steps are in flight (jax 0.10.2); waiting every few batches
    # bounds the queue (45 in flight were fine). One device, GPUs and TPUs
    # never wait.
    self._drain_every = (8 if jax.default_backend() == 'cpu' and
                         len(run.mesh.local_devices) > 1 else 0)

  def _batches(self):
    run = self._run
    return pipeline.eval_batches(
        run.sources.eval, run.preprocess,
        global_batch_size=run.config.eval_batch_size or run.config.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())

  def metric_names(self) -> set[str]:
    """The names `__call__` returns, from shapes alone (nothing is run)."""
    batch = multihost.jit_batch(next(iter(self._batches())),
                                self._batch_sharding)
    shapes = jax.eval_shape(self._sums, self._run.params, batch)
    names = set()
    for name, ev in self._run.evaluators.items():
      names |= set(ev.summarize(jax.tree.map(
          lambda s: np.zeros(s.shape, s.dtype), shapes[name])))
    return names

  def __call__(self, params) -> dict[str, float] | None:
    run = self._run
    total = None
    for i, local_batch in enumerate(self._batches()):
      if self._interrupted():
        return None
      sums = self._sums(params, multihost.jit_batch(local_batch,
                                                    self._batch_sharding))
      total = sums if total is None else {
          name: step_lib.add_metrics(total[name], sums[name]) for name in sums}
      if self._drain_every and (i + 1) % self._drain_every == 0:
        jax.block_until_ready(total)
    total = jax.device_get(total)
    out = {}
    for name, ev in run.evaluators.items():
      out.update(ev.summarize(total[name]))
    return out
