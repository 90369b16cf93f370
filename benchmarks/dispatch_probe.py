"""Several train steps per dispatch, for the mlp's 0.6 ms step.

What `steps_per_dispatch` K (`step.summing_steps`: a `lax.scan` over K
stacked batches, as Keras's `steps_per_execution`) gains, in one process,
interleaved windows (so the machine's load hits every side alike):
  bare       the compiled step on one fixed device batch;
  1/dispatch the loop's way: `next()` on the in-memory iterator, `jit_batch`,
             the summing step;
  K/dispatch `pipeline.next_stacked` (one gather for K batches), one
             `jit_batch`, one call of the K-step scan: what the loop does.

  python -m benchmarks.dispatch_probe [--k 8] [--windows 7]
"""

import argparse
import time

import jax
import numpy as np

from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.training import perf
from bigml_jax.training import step as step_lib


def main(argv=None) -> None:
  from benchmarks import jax_harness, jax_workloads  # pylint: disable=g-import-not-at-top
  from benchmarks.workloads import WORKLOADS  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from bigml_jax.parallel import multihost  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--k', type=int, default=8)
  parser.add_argument('--windows', type=int, default=7)
  parser.add_argument('--steps', type=int, default=800)
  args = parser.parse_args(argv)
  k, w = args.k, WORKLOADS['mlp']
  task, tx = jax_workloads.make_task_and_optimizer(w)
  bench = jax_workloads.build_workload('mlp')
  runner = jax_harness.Runner(bench)
  mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 1, 'tensor': 1},
                            jax.devices()[:1])
  shardings = jax.tree.map(lambda x: x.sharding, bench.state)
  replicated = mesh_lib.replicated(mesh)
  step_fn = jax.jit(step_lib.make_train_step(task, tx))
  shapes = jax.eval_shape(step_fn, bench.state, bench.batch)[1]
  new_sums = jax.jit(lambda: step_lib.no_metrics(shapes),
                     out_shardings=replicated)
  one, _ = perf.compile_and_report(
      step_lib.jit_summing_step(step_fn, shardings, mesh), bench.state,
      new_sums(), bench.batch)
  stacked = jax.tree.map(lambda x: np.stack([np.asarray(x)] * k), bench.batch)
  many, _ = perf.compile_and_report(
      step_lib.jit_summing_step(step_fn, shardings, mesh, k), bench.state,
      new_sums(), stacked)

  data = jax_workloads.experiment_config(w, num_train=64 * w.batch_size).dataset
  source = pipeline.SyntheticSource(64 * w.batch_size, tuple(data.shape),
                                    data.num_classes)
  preprocess = pipeline.make_preprocess(data)
  batches = pipeline.train_iterator(source, preprocess, seed=0,
                                    global_batch_size=w.batch_size)
  batch_sharding = mesh_lib.batch_sharding(mesh)
  state = [runner.state]

  def bare(n):
    s = state[0]
    for _ in range(n):
      s, _ = runner.compiled(s, bench.batch)
    state[0] = jax.block_until_ready(s)

  def per_step(n):
    s, sums = state[0], new_sums()
    for _ in range(n):
      s, sums = one(s, sums, multihost.jit_batch(next(batches), batch_sharding))
    state[0] = jax.block_until_ready(s)

  def per_k(n):
    s, sums = state[0], new_sums()
    stacked_sharding = mesh_lib.batch_sharding(mesh, k)
    for _ in range(n // k):
      chunk = pipeline.next_stacked(batches, k)
      s, sums = many(s, sums, multihost.jit_batch(chunk, stacked_sharding))
    state[0] = jax.block_until_ready(s)

  sides = {'bare': bare, '1 step/dispatch': per_step,
           f'{k} steps/dispatch': per_k}
  for run in sides.values():
    run(8 * k)
  rates = {name: [] for name in sides}
  for _ in range(args.windows):
    for name, run in sides.items():
      start = time.perf_counter()
      run(args.steps)
      rates[name].append(args.steps * w.batch_size /
                         (time.perf_counter() - start))
  base = np.median(rates['bare'])
  for name, r in rates.items():
    print(f'{name:18s} {np.median(r):9,.0f} ex/s  {np.median(r) / base:.3f} '
          'of bare')


if __name__ == '__main__':
  main()
