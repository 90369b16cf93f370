"""Augmentation: random preprocessing ops, deterministic per example.

Every draw is a pure function of (seed, position, op, draw): `position` is
the example's place in the endless train stream (global batch k holds
positions k * batch_size ... (k + 1) * batch_size - 1), so a draw is fixed
by (seed, step, example) whatever the number of processes, and a resumed
run draws exactly what it would have. The generator is a counter-based hash
(splitmix64's finalizer), so drawing for a whole batch is a few array ops.
"""

import dataclasses

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finalizer: a bijection of uint64 that mixes every bit."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):  # uint64 arithmetic wraps, as intended.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _add(a, b) -> np.ndarray:
  with np.errstate(over='ignore'):
    return np.asarray(a, np.uint64) + np.asarray(b, np.uint64)


@dataclasses.dataclass(frozen=True)
class ExampleKeys:
  """The random keys of a batch's examples: (seed, positions [B]).

  `fold_in(i)` derives independent keys for op i; `uniform(n)` draws
  [B, n] floats in [0, 1), the same for an example in any batch.
  """
  seed: int
  positions: np.ndarray
  salt: int = 0

  def fold_in(self, salt: int) -> 'ExampleKeys':
    return ExampleKeys(self.seed, self.positions,
                       int(_mix(_add(_mix(self.salt), salt + 1))))

  def uniform(self, n: int = 1) -> np.ndarray:
    base = _mix(_add(_mix(np.uint64(self.seed) ^ np.uint64(self.salt)),
                     self.positions))
    with np.errstate(over='ignore'):
      counters = _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
    bits = _mix(_add(base[:, None], counters[None, :]))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


OPS = {}
