"""The array index_shuffle against grain's own, one index at a time."""

from grain._src.python.experimental.index_shuffle.python import (
    index_shuffle_module as grain_shuffle)
import numpy as np
import pytest

from bigml_jax.data.index_shuffle import index_shuffle


# Every block size: 2**k + 1 for k = 0..62 (each needs k + 1 bits), small
# walks' pointer jumping and the exact powers of two, up to the largest
# max_index grain's binding accepts.
@pytest.mark.parametrize('max_index', sorted(
    {2**k + 1 for k in range(63)} | {7, 255, 2047, 2048, 8191, 65535, 65536,
                                    2**17, 2**63 - 1}))
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


@pytest.mark.parametrize('rounds', [2, 5, 1026])
def test_rounds_grain_refuses_are_refused(rounds):
  with pytest.raises(ValueError, match=r'rounds must be an even integer in '
                     r'\[4, 1024\]'):
    index_shuffle(np.arange(3), 2, seed=0, rounds=rounds)


def test_seeds_beyond_32_bits_are_refused():
  with pytest.raises(ValueError, match=r'seed must be in \[0, 2\*\*32\)'):
    index_shuffle(np.arange(3), 2, seed=2**32)


def test_like_grains_not_a_permutation_when_max_index_is_4_to_the_8():
  # The block is ceil(log2(max_index)) bits: 16 for max_index 65,536, which
  # cannot hold it (module docstring).
  out = index_shuffle(np.arange(65_537), 65_536, seed=0)
  assert 65_536 not in out and len(np.unique(out)) == 65_536
