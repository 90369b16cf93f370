"""Weight-only int8 quantization with one scale per output channel.

A float weight w with two or more dims is stored as q = round(w / s), int8
in [-127, 127], and s = max|w| / 127 over every axis but its channel axis:
the last (a kernel's output features) or, for embedding tables, the first
(a token's row, which the tied output layer also scores with). Biases,
norms and other vectors stay float32. The exported function multiplies q
by s as it runs, so the artifact's parameters shrink about 4x while its
matmuls stay in float32.
"""

import jax.numpy as jnp
import numpy as np

SCALE_SUFFIX = ':scale'


def _channel_axis(name: str, ndim: int) -> int:
  return 0 if name.rsplit('/', 1)[-1] == 'embedding' else ndim - 1


def quantize_int8(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Flat params {name: array} -> stored arrays: int8 `name` and float32
  `name:scale` (broadcastable to it) for each float leaf of ndim >= 2, the
  other leaves as they are."""
  stored = {}
  for name, w in params.items():
    w = np.asarray(w)
    if w.ndim < 2 or not np.issubdtype(w.dtype, np.floating):
      stored[name] = w
      continue
    axis = _channel_axis(name, w.ndim)
    others = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w.astype(np.float32)).max(axis=others, keepdims=True)
    scale = np.where(amax > 0, amax / 127, 1).astype(np.float32)
    stored[name] = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    stored[name + SCALE_SUFFIX] = scale
  return stored


def dequantize(stored: dict) -> dict:
  """Stored arrays (numpy or traced) -> float32 params {name: array}."""
  params = {}
  for name, value in stored.items():
    if name.endswith(SCALE_SUFFIX):
      continue
    scale = stored.get(name + SCALE_SUFFIX)
    params[name] = (value if scale is None else
                    value.astype(jnp.float32) * scale)
  return params
