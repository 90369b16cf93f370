"""Framework overhead: `train_and_evaluate` against the bare jitted step.

The same workload config runs three ways, each in a fresh process:
  bare   the compiled train step on one fixed device batch (run.measure_jax);
  fed    the same compiled step in the loop a researcher writes by hand (as
         flax/examples' MNIST does): each step gathers a batch from
         in-memory arrays by a shuffled permutation and passes the numpy
         arrays to the step, which places them. The data movement any real
         run pays, as numpy lays it out: a gathered array is often not
         64-byte aligned, and XLA:CPU then copies it (the framework's loop
         aligns it first, which saves the mlp 15-30 us a step);
  loop   `bigml_jax.train_and_evaluate` on the `synthetic` dataset: the
         input pipeline, host->device copies, on-device metric sums, log-step
         fetches; its own examples_per_sec (median over log windows after
         the first) is the figure, with log windows as long as the bare
         run's timed windows. Eval and the checkpoint come after the last
         window, so they are not in it.
"""

import shutil
import tempfile

from benchmarks import run as run_lib
from benchmarks.workloads import WORKLOADS


def measure_fed(name: str, *, windows: int, window_s: float) -> dict:
  """The hand-written loop: numpy gather + the compiled step."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_harness, jax_workloads  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  w = WORKLOADS[name]
  bench = jax_workloads.build_workload(name)
  runner = jax_harness.Runner(bench)
  # The very arrays the loop's synthetic split reads its examples from.
  config = jax_workloads.experiment_config(w).dataset
  pool = pipeline.SyntheticSource(
      64 * w.batch_size, tuple(config.shape), config.num_classes,
      vocab_size=config.get('vocab_size'))._pool.arrays
  pool = {k: pool[k].astype(bench.batch[k].dtype) for k in bench.batch}
  rng = np.random.default_rng(0)
  order, position = rng.permutation(len(pool['label'])), 0

  def run(steps: int) -> None:
    nonlocal order, position
    state = runner.state
    for _ in range(steps):
      if position + w.batch_size > len(order):
        order, position = rng.permutation(len(order)), 0
      index = order[position:position + w.batch_size]
      position += w.batch_size
      batch = {k: v[index] for k, v in pool.items()}
      state, runner.metrics = runner.compiled(state, batch)
    runner.state = jax.block_until_ready(state)

  stats = run_lib.timing.measure(run, examples_per_step=w.batch_size,
                                 windows=windows, window_s=window_s)
  return dict(stats, side='fed', workload=name,
              peak_rss_mb=run_lib.timing.peak_rss_mb())


def measure_loop(name: str, *, windows: int, steps: int,
                 steps_per_dispatch: int = 1) -> dict:
  """train_and_evaluate with log windows of `steps` steps (rounded up to a
  multiple of `steps_per_dispatch`)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import bigml_jax  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_workloads  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  w = WORKLOADS[name]
  steps = -(-steps // steps_per_dispatch) * steps_per_dispatch
  # First window: compile + first step (dropped by the loop); then `windows`.
  config = jax_workloads.experiment_config(
      w, total_steps=steps * (windows + 1), num_train=64 * w.batch_size)
  config.log_every = steps
  config.steps_per_dispatch = steps_per_dispatch
  workdir = tempfile.mkdtemp(prefix=f'bench_{name}_')
  try:
    result = bigml_jax.train_and_evaluate(config, workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {'side': 'loop', 'workload': name,
          'examples_per_sec': float(result['examples_per_sec']),
          'steps_per_window': steps, 'windows': windows,
          'steps_per_dispatch': steps_per_dispatch,
          'time_to_first_step_s': result.get('time_to_first_step_s'),
          'loss': float(result['train_loss']),
          'peak_rss_mb': run_lib.timing.peak_rss_mb()}


def table(rows: list[dict], steps_per_dispatch: int = 1) -> str:
  loop = 'train_and_evaluate' + (
      f' ({steps_per_dispatch} steps a call)' if steps_per_dispatch > 1 else '')
  lines = ['| workload | bare step ex/s | hand-written fed loop ex/s | '
           f'{loop} ex/s | slower than bare | slower than fed |',
           '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['workload']} | {r['bare']['examples_per_sec']:,.0f} | "
                 f"{r['fed']['examples_per_sec']:,.0f} | "
                 f"{r['loop']['examples_per_sec']:,.0f} | "
                 f"{r['slower_pct']:+.1f}% | {r['slower_than_fed_pct']:+.1f}% |")
  return '\n'.join(lines)


def _best(a: dict | None, b: dict) -> dict:
  return b if a is None or b['examples_per_sec'] > a['examples_per_sec'] else a


def run(names: list[str], *, windows: int, window_s: float,
        rounds: int = 1, steps_per_dispatch: int = 1) -> dict:
  """Each side measured `rounds` times, alternating, keeping its best round:
  on a shared machine a load change moves one measurement by 10-20%."""
  rows = []
  for name in names:
    bare = fed = loop = None
    for _ in range(rounds):
      bare = _best(bare, run_lib.run_isolated(
          'bigml_jax', name, windows=windows, window_s=window_s))
      fed = _best(fed, run_lib.run_isolated(
          'fed', name, windows=windows, window_s=window_s))
      loop = _best(loop, run_lib.run_isolated(
          'loop', name, windows=windows, window_s=window_s,
          steps=bare['steps_per_window'],
          steps_per_dispatch=steps_per_dispatch))
    rate = loop['examples_per_sec']
    rows.append({
        'workload': name, 'bare': bare, 'fed': fed, 'loop': loop,
        'rounds': rounds,
        'slower_pct': 100 * (1 - rate / bare['examples_per_sec']),
        'slower_than_fed_pct': 100 * (1 - rate / fed['examples_per_sec'])})
  return {'rows': rows, 'table': table(rows, steps_per_dispatch)}
