"""Timed windows: warm up, size a window to ~window_s, take the median.

Framework-neutral: a side supplies `run(n)`, which runs n train steps and
returns only once their results exist (JAX: block_until_ready; torch eager on
CPU is synchronous), so a window's wall time is exactly n steps' work.
"""

import resource
import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(run: Callable[[int], None], *, examples_per_step: int,
            windows: int = 5, window_s: float = 1.0,
            warmup_steps: int = 3) -> dict:
  """Examples/s: the median over `windows` windows of equal step counts.

  The window length is set after warm-up by doubling a probe run until it
  takes a fifth of `window_s`, so slow and fast workloads both get windows
  long enough to swamp timer and dispatch noise.
  """
  steps = _window_steps(run, window_s, warmup_steps)
  seconds = [timed(lambda: run(steps)) for _ in range(windows)]
  rates = [steps * examples_per_step / s for s in seconds]
  return {'examples_per_sec': statistics.median(rates),
          'examples_per_sec_min': min(rates),
          'examples_per_sec_max': max(rates),
          'steps_per_window': steps, 'windows': windows,
          'window_seconds': seconds}


def _window_steps(run, window_s: float, warmup_steps: int) -> int:
  run(warmup_steps)
  n, probe = 1, timed(lambda: run(1))
  while probe < window_s / 5:
    n *= 2
    probe = timed(lambda n=n: run(n))
  return max(1, round(n * window_s / probe))


def measure_pair(run_a: Callable[[int], None], run_b: Callable[[int], None],
                 *, examples_per_step: int, windows: int = 5,
                 window_s: float = 1.0, warmup_steps: int = 3) -> dict:
  """Like `measure` for two variants, their windows interleaved (a, b, a,
  b, ...): load that drifts during the run then hits both alike, and the
  median of the per-pair ratios b/a is the gain of b."""
  steps_a = _window_steps(run_a, window_s, warmup_steps)
  steps_b = _window_steps(run_b, window_s, warmup_steps)
  rates_a, rates_b = [], []
  for _ in range(windows):
    rates_a.append(steps_a * examples_per_step / timed(lambda: run_a(steps_a)))
    rates_b.append(steps_b * examples_per_step / timed(lambda: run_b(steps_b)))
  return {'a_examples_per_sec': statistics.median(rates_a),
          'b_examples_per_sec': statistics.median(rates_b),
          'gain': statistics.median(b / a for a, b in zip(rates_a, rates_b)),
          'windows': windows}


def peak_rss_mb() -> float:
  """This process's peak resident memory so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
