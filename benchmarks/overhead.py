"""Framework overhead: `train_and_evaluate` against the bare jitted step.

The same workload config runs both ways, each in a fresh process:
  bare   the compiled train step on one fixed device batch (run.measure_jax);
  loop   `bigml_jax.train_and_evaluate` on the `synthetic` dataset: grain
         pipeline, host->device copies, on-device metric sums, log-step
         fetches; its own examples_per_sec (median over log windows after
         the first) is the figure, with log windows as long as the bare
         run's timed windows. Eval and the checkpoint come after the last
         window, so they are not in it.
"""

import shutil
import tempfile

from benchmarks import run as run_lib
from benchmarks.workloads import WORKLOADS


def measure_loop(name: str, *, windows: int, steps: int) -> dict:
  """train_and_evaluate with log windows of `steps` steps."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import bigml_jax  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_workloads  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  w = WORKLOADS[name]
  # First window: compile + first step (dropped by the loop); then `windows`.
  config = jax_workloads.experiment_config(
      w, total_steps=steps * (windows + 1), num_train=64 * w.batch_size)
  config.log_every = steps
  workdir = tempfile.mkdtemp(prefix=f'bench_{name}_')
  try:
    result = bigml_jax.train_and_evaluate(config, workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {'side': 'loop', 'workload': name,
          'examples_per_sec': float(result['examples_per_sec']),
          'steps_per_window': steps, 'windows': windows,
          'time_to_first_step_s': result.get('time_to_first_step_s'),
          'loss': float(result['train_loss']),
          'peak_rss_mb': run_lib.timing.peak_rss_mb()}


def table(rows: list[dict]) -> str:
  lines = ['| workload | bare step ex/s | train_and_evaluate ex/s | '
           'slower by |', '|---|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['workload']} | {r['bare']['examples_per_sec']:,.0f} | "
                 f"{r['loop']['examples_per_sec']:,.0f} | "
                 f"{r['slower_pct']:+.1f}% |")
  return '\n'.join(lines)


def run(names: list[str], *, windows: int, window_s: float,
        rounds: int = 1) -> dict:
  """Each side measured `rounds` times, alternating, keeping its best round:
  on a shared machine a load change moves one measurement by 10-20%."""
  rows = []
  for name in names:
    bare = loop = None
    for _ in range(rounds):
      b = run_lib.run_isolated('bigml_jax', name, windows=windows,
                               window_s=window_s)
      bare = b if bare is None or b['examples_per_sec'] > bare[
          'examples_per_sec'] else bare
      looped = run_lib.run_isolated('loop', name, windows=windows,
                                    window_s=window_s,
                                    steps=bare['steps_per_window'])
      loop = looped if loop is None or looped['examples_per_sec'] > loop[
          'examples_per_sec'] else loop
    rows.append({'workload': name, 'bare': bare, 'loop': loop,
                 'rounds': rounds,
                 'slower_pct': 100 * (1 - loop['examples_per_sec'] /
                                      bare['examples_per_sec'])})
  return {'rows': rows, 'table': table(rows)}
