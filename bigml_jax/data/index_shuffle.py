"""grain's `index_shuffle` (a Simon block cipher with cycle walking), for a
whole numpy array of indices at once.

grain's version maps one index per Python call, ~3.5 us each: at a small
step (the MLP's 0.6 ms for 128 examples) that alone is most of a step. The
same permutation computed over arrays of 65,536 indices costs 0.1-0.3 us
per index (benchmarks/NOTES.md), and equals grain's bit for bit
(tests/data/test_index_shuffle.py), so a dataset is shuffled exactly as
`grain.MapDataset.shuffle` shuffles it.

The algorithm, as in grain's index_shuffle.cc: the block size is
ceil(log2(max_index)) bits (at least 16, rounded up to even); round keys
come from C++'s `std::seed_seq{seed}`; each pair of Simon rounds is
  left ^= F(right) ^ k[i];  right ^= F(left) ^ k[i+1],
  F(x) = (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2);
and an encrypted value above max_index is encrypted again until it is not.

Like grain's, it is not a permutation when max_index is 2**k with k even
and >= 16 (n = 65,537, 262,145, ...): the block is then one bit short, so
max_index is never returned and one other index twice. We keep grain's
order (and the order of runs resumed from a checkpoint) rather than fix it.
"""

import math

import numpy as np

_MASK32 = 0xFFFFFFFF


def seed_seq(seed: int, count: int) -> list[int]:
  """`std::seed_seq{seed}.generate(...)` of `count` 32-bit words, the
  algorithm of the C++ standard ([rand.util.seedseq])."""
  v = [seed & _MASK32]
  s, n = len(v), count
  b = [0x8b8b8b8b] * n
  t = (11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else
       3 if n >= 7 else (n - 1) // 2)
  p, q, m = (n - t) // 2, (n - t) // 2 + t, max(s + 1, n)
  mix = lambda x: x ^ (x >> 27)
  for k in range(m):
    r1 = 1664525 * mix(b[k % n] ^ b[(k + p) % n] ^ b[(k - 1) % n]) & _MASK32
    r2 = r1 + (s if k == 0 else k % n + v[k - 1] if k <= s else k % n)
    r2 &= _MASK32
    b[(k + p) % n] = (b[(k + p) % n] + r1) & _MASK32
    b[(k + q) % n] = (b[(k + q) % n] + r2) & _MASK32
    b[k % n] = r2
  for k in range(m, m + n):
    r3 = 1566083941 * mix((b[k % n] + b[(k + p) % n] + b[(k - 1) % n])
                          & _MASK32) & _MASK32
    r4 = (r3 - k % n) & _MASK32
    b[(k + p) % n] ^= r3
    b[(k + q) % n] ^= r4
    b[k % n] = r4
  return b


def _word_bits(max_index: int) -> int:
  block = math.ceil(math.log2(max_index))
  return min(max(block + block % 2, 16), 64) // 2


def _encrypt(x: np.ndarray, keys: list[int], w: int) -> np.ndarray:
  # The rounds run on words of the smallest dtype that holds w bits: the
  # 16-bit minimum block on uint8 words is 7x faster than on uint32.
  # (numpy defines a shift by >= the dtype's width as 0: rotl(v, 8) is v.)
  word = np.dtype(f'uint{max(8, 1 << (w - 1).bit_length())}').type
  mask = word((1 << w) - 1)
  rotl = lambda v, r: ((v << word(r)) | (v >> word(w - r))) & mask
  f = lambda v: (rotl(v, 1) & rotl(v, 8)) ^ rotl(v, 2)
  dtype = x.dtype.type
  left = ((x >> dtype(w)) & dtype((1 << w) - 1)).astype(word)
  right = (x & dtype((1 << w) - 1)).astype(word)
  for i in range(0, len(keys), 2):
    left ^= f(right) ^ word(keys[i] & ((1 << w) - 1))
    right ^= f(left) ^ word(keys[i + 1] & ((1 << w) - 1))
  return (left.astype(dtype) << dtype(w)) | right.astype(dtype)


def _walk(start: np.ndarray, max_index: int, step) -> np.ndarray:
  """Cycle walking: step(values) until every value is <= max_index."""
  out = step(start)
  walking = np.flatnonzero(out > max_index)
  while walking.size:
    out[walking] = step(out[walking])
    walking = walking[out[walking] > max_index]
  return out


def _jump(table: np.ndarray, max_index: int) -> np.ndarray:
  """Every walk through `table` at once, by pointer jumping: each pass
  jumps twice as far, so a walk of length L costs log2(L) passes over the
  table instead of L numpy calls."""
  jump = table.copy()
  while True:
    out = np.flatnonzero(jump > max_index)
    if not out.size or out[0] > max_index:
      return jump
    jump[out] = jump[jump[out]]


def index_shuffle(index: np.ndarray, max_index: int, seed: int,
                  rounds: int = 4) -> np.ndarray:
  """Positions of `index` (int array, values in [0, max_index]) in grain's
  permutation of [0, max_index] for `seed`; uint64 of the same shape."""
  if rounds < 4 or rounds % 2 or rounds > 1024:
    raise ValueError(f'rounds must be an even integer in [4, 1024], got '
                     f'{rounds}')
  if not 0 <= seed < 2**32:
    raise ValueError(f'seed must be in [0, 2**32), got {seed}')
  index = np.asarray(index)
  if max_index == 0:
    return np.zeros(index.shape, np.uint64)
  keys, w = seed_seq(seed, rounds), _word_bits(max_index)
  # uint64 arithmetic is several times slower in numpy than uint32.
  dtype = np.uint32 if 2 * w <= 32 and max_index < 2**32 else np.uint64
  encrypt = lambda v: _encrypt(v, keys, w)
  flat = index.reshape(-1).astype(dtype)
  if (1 << 2 * w) > 4 * (max_index + 1):
    # Only the 16-bit minimum block makes walks long (more than 4 steps on
    # average): encrypting the whole block once turns each step into a
    # lookup.
    table = encrypt(np.arange(1 << 2 * w, dtype=dtype))
    if max_index < 2048:  # Walks of hundreds of steps: resolve them all.
      out = _jump(table, max_index)[flat]
    else:
      out = _walk(flat, max_index, lambda v: table[v])
  else:
    out = _walk(flat, max_index, encrypt)
  return out.astype(np.uint64).reshape(index.shape)
