"""Framework overhead: `train_and_evaluate` against the bare jitted step.

The same workload config runs both ways, each in a fresh process:
  bare   the compiled train step on one fixed device batch (run.measure_jax);
  loop   `bigml_jax.train_and_evaluate` on the `synthetic` dataset: grain
         pipeline, host->device copies, on-device metric sums, log-step
         fetches; its own examples_per_sec (median over log windows after
         the first) is the figure, with log windows as long as the bare
         run's timed windows. Eval and the checkpoint come after the last
         window, so they are not in it.
  loop, pooled source   the same, with `SyntheticSource` replaced by
         `PooledSyntheticSource` (a proposed library change): it separates
         the loop's own cost from that of generating Gaussian noise per
         example in Python.
"""

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np

from benchmarks import run as run_lib
from benchmarks.workloads import WORKLOADS


@dataclasses.dataclass(frozen=True)
class PooledSyntheticSource(Sequence):
  """`SyntheticSource` whose example i is example i % pool_size of a pool
  drawn once: still a pure function of (seed, i), but a read is an index,
  not a fresh generator (~30 us per example in Python)."""
  num_examples: int
  shape: tuple[int, ...]
  num_classes: int
  seed: int = 0
  pool_size: int = 256

  def __post_init__(self):
    rng = np.random.default_rng(self.seed)
    n = min(self.pool_size, self.num_examples)
    object.__setattr__(self, '_images', rng.standard_normal(
        (n, *self.shape), dtype=np.float32))
    object.__setattr__(self, '_labels', rng.integers(
        self.num_classes, size=n).astype(np.int64))

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    i = index % len(self._images)
    return {'image': self._images[i], 'label': self._labels[i]}


def measure_loop(name: str, *, windows: int, steps: int,
                 pooled: bool = False) -> dict:
  """train_and_evaluate with log windows of `steps` steps."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import bigml_jax  # pylint: disable=g-import-not-at-top
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_workloads  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  if pooled:  # This process only: price the proposed source.
    pipeline.SyntheticSource = PooledSyntheticSource
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
  return {'side': 'loop_pooled' if pooled else 'loop', 'workload': name,
          'examples_per_sec': float(result['examples_per_sec']),
          'steps_per_window': steps, 'windows': windows,
          'time_to_first_step_s': result.get('time_to_first_step_s'),
          'loss': float(result['train_loss']),
          'peak_rss_mb': run_lib.timing.peak_rss_mb()}


def table(rows: list[dict]) -> str:
  lines = ['| workload | bare step ex/s | train_and_evaluate ex/s | '
           'slower by | train_and_evaluate, pooled source ex/s | slower by |',
           '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['workload']} | {r['bare']['examples_per_sec']:,.0f} | "
                 f"{r['loop']['examples_per_sec']:,.0f} | "
                 f"{r['slower_pct']:+.1f}% | "
                 f"{r['loop_pooled']['examples_per_sec']:,.0f} | "
                 f"{r['pooled_slower_pct']:+.1f}% |")
  return '\n'.join(lines)


def run(names: list[str], *, windows: int, window_s: float) -> dict:
  rows = []
  for name in names:
    bare = run_lib.run_isolated('bigml_jax', name, windows=windows,
                                window_s=window_s)
    row = {'workload': name, 'bare': bare}
    for side in ('loop', 'loop_pooled'):
      row[side] = run_lib.run_isolated(side, name, windows=windows,
                                       window_s=window_s,
                                       steps=bare['steps_per_window'])
    slower = lambda side: 100 * (1 - row[side]['examples_per_sec'] /
                                 bare['examples_per_sec'])
    row['slower_pct'] = slower('loop')
    row['pooled_slower_pct'] = slower('loop_pooled')
    rows.append(row)
  return {'rows': rows, 'table': table(rows)}
