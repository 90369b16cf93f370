"""The array index_shuffle against grain's own, one index at a time."""

from grain._src.python.experimental.index_shuffle.python import (
    index_shuffle_module as grain_shuffle)
import numpy as np
import pytest

from bigml_jax.data.index_shuffle import index_shuffle


# Every block size class: the 16-bit minimum, odd bit counts rounded up, the
# exact powers of two, and the 64-bit maximum grain's binding accepts.
@pytest.mark.parametrize('max_index', [
    1, 2, 7, 255, 8191, 65535, 65536, 65537, 2**17, 10**6 + 3, 2**31 + 7,
    2**40 + 3, 2**62 + 1, 2**63 - 1])
@pytest.mark.parametrize('seed,rounds', [(0, 4), (2**32 - 1, 4), (12345, 8)])
def test_equals_grain_bit_for_bit(max_index, seed, rounds):
  rng = np.random.default_rng(max_index % 1000 + seed % 1000)
  index = np.unique(np.concatenate([
      rng.integers(0, max_index, 40, dtype=np.uint64, endpoint=True),
      np.array([0, max_index], np.uint64)]))
  expected = [grain_shuffle.index_shuffle(int(i), max_index, seed, rounds)
              for i in index]
  np.testing.assert_array_equal(index_shuffle(index, max_index, seed, rounds),
                                np.array(expected, np.uint64))


def test_is_a_permutation_and_keeps_the_shape():
  out = index_shuffle(np.arange(1000).reshape(10, 100), 999, seed=3)
  assert out.shape == (10, 100)
  np.testing.assert_array_equal(np.sort(out.ravel()), np.arange(1000))
  assert not np.array_equal(out.ravel(), np.arange(1000))


def test_odd_rounds_are_refused_like_grains():
  with pytest.raises(ValueError, match='rounds must be an even integer >= 4'):
    index_shuffle(np.arange(3), 2, seed=0, rounds=5)
