"""Building blocks shared by the models: partition-annotated layers, pooling.

Every parameter carries logical axis names (`embed`, `mlp`, `vocab`, ...) so
the mesh rules in `bigml_jax.parallel.mesh` decide how it is sharded; model
code never names a mesh axis.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bigml_jax.errors import ConfigError, check_choice

_ACTIVATIONS = ('relu', 'gelu', 'silu', 'tanh', 'sigmoid', 'elu', 'leaky_relu')


def activation(name: str):
  """Returns the `flax.linen` activation called `name`."""
  check_choice('activation', name, _ACTIVATIONS)
  return getattr(nn, name)


def dense(features: int, axes: tuple[str, str], **kwargs) -> nn.Dense:
  """Dense layer whose kernel [in, out] has logical names `axes`."""
  return nn.Dense(
      features,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), (axes[1],)),
      **kwargs)


def chain_axes(num_hidden: int, out: str) -> list[tuple[str, str]]:
  """Logical names for `num_hidden` dense kernels in a row, then one [.., out]:
  [embed, mlp], [mlp, embed], [embed, mlp], ..., [last, out].

  Megatron's column- then row-parallel pairs: each kernel takes its input
  sharded the way the previous one left it. Naming every kernel [embed, mlp]
  instead makes XLA reshard each hidden activation from 'mlp' to 'embed',
  which on meshes with fsdp > 1 and tensor > 1 it computes wrongly
  (tests/parallel/test_mesh.py).
  """
  pairs = [('mlp', 'embed') if i % 2 else ('embed', 'mlp')
           for i in range(num_hidden)]
  return pairs + [('mlp' if num_hidden % 2 else 'embed', out)]


def dense_head(x_BxF: jnp.ndarray, widths: Sequence[int], num_classes: int,
               dropout_rate: float, train: bool) -> jnp.ndarray:
  """Dropout -> Dense -> ReLU per width, dropout, Dense(num_classes): the
  classifier that closes the conv nets. Call inside a compact method."""
  *hidden, head = chain_axes(len(widths), 'vocab')
  drop = lambda y: nn.Dropout(dropout_rate, deterministic=not train)(y)
  for width, axes in zip(widths, hidden):
    x_BxF = nn.relu(dense(width, axes)(drop(x_BxF)))
  return dense(num_classes, head)(drop(x_BxF))


def conv(features: int, kernel_size: Sequence[int], *, transpose: bool = False,
         **kwargs) -> nn.Module:
  """Conv (or transposed conv) layer whose kernel [kh, kw, in, out] (or
  [k, in, out] for 1-D) shards its output channels over 'embed' (FSDP) only.

  Channels sharded over 'tensor' would have to be resharded wherever a conv
  stack meets a flatten or a differently named layer, and on meshes with
  fsdp > 1 and tensor > 1 XLA gets such reshards wrong (see
  tests/parallel/test_mesh.py); tensor-parallel convolutions are rare.
  """
  return (ConvTranspose if transpose else nn.Conv)(
      features,
      tuple(kernel_size),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(),
          (None,) * (len(kernel_size) + 1) + ('embed',)),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ('embed',)),
      **kwargs)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 max pooling, stride 2, VALID: [B, H, W, C] -> [B, H//2, W//2, C].

  Written as reshape + max rather than `nn.max_pool`: XLA's CPU backend runs
  the backward pass of `reduce_window` several times slower, and the two agree
  exactly (odd trailing rows/columns are dropped, as VALID padding does).
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """The (low, high) padding `lax.conv_transpose` gives the dilated input."""
  if padding == 'SAME':
    total = k + s - 2
    low = k - 1 if s > k - 1 else -(-total // 2)
  else:
    total = k + s - 2 + max(k - s, 0)
    low = k - 1
  return low, total - low


def conv_transpose_by_matmul(x_BxHxWxC, kernel_KhxKwxCxF, strides, padding):
  """`lax.conv_transpose(x, kernel, strides, padding)` (NHWC, HWIO, kernel
  not flipped: flax's `ConvTranspose`) as one matmul and an overlap-add.

  z = x @ kernel gives every input pixel's kh x kw x F contribution in one
  GEMM; input i, tap t lands at output s*i + (k-1-t) - offset. Grouping the
  taps by phase r = (k-1-t) mod s, each output phase is a sum of ceil(k/s)
  shifted slices of z; the phases interleave into the output. Unlike XLA's
  convolution over an input dilated with zeros, no product is with a zero.
  """
  b, h, w, c = x_BxHxWxC.shape
  kh, kw, _, f = kernel_KhxKwxCxF.shape
  (sh, sw) = strides
  # Taps flipped so that tap index = offset within the full output window.
  k = kernel_KhxKwxCxF[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, -1)
  z = (x_BxHxWxC.reshape(-1, c) @ k).reshape(b, h, w, kh * kw, f)
  # One piece per tap. The gradient of a split is one concatenation; that of
  # kh*kw slices was a sum of kh*kw zero-padded copies of z, 13% of the GAN
  # step (benchmarks/NOTES.md).
  taps = [t[:, :, :, 0] for t in jnp.split(z, kh * kw, axis=3)]
  qh, qw = -(-kh // sh), -(-kw // sw)  # Taps per phase, rounded up.

  def phase(rh, rw):
    total = jnp.zeros((b, h + qh - 1, w + qw - 1, f), z.dtype)
    for i in range(qh):
      for j in range(qw):
        th, tw = sh * i + rh, sw * j + rw
        if th < kh and tw < kw:
          total += jnp.pad(taps[th * kw + tw],
                           ((0, 0), (i, qh - 1 - i), (j, qw - 1 - j), (0, 0)))
    return total

  y = jnp.stack([jnp.stack([phase(rh, rw) for rw in range(sw)], axis=3)
                 for rh in range(sh)], axis=2)  # [B, H', sh, W', sw, F]
  y = y.reshape(b, (h + qh - 1) * sh, (w + qw - 1) * sw, f)
  out = []
  for size, k_, s_, full in ((h, kh, sh, y.shape[1]), (w, kw, sw, y.shape[2])):
    low, high = _transpose_padding(k_, s_, padding)
    start = k_ - 1 - low
    length = (size - 1) * s_ + 1 + low + high - k_ + 1
    out.append((start, length, max(start + length - full, 0)))
  (h0, hn, hpad), (w0, wn, wpad) = out
  y = jnp.pad(y, ((0, 0), (0, hpad), (0, wpad), (0, 0)))
  return y[:, h0:h0 + hn, w0:w0 + wn, :]


class ConvTranspose(nn.Module):
  """2-D transposed convolution with `nn.ConvTranspose`'s parameters and
  results (kernel [kh, kw, in, out], SAME or VALID padding) on batched
  inputs [B, H, W, C] (flax's also takes unbatched ones).

  On CPU it runs as `conv_transpose_by_matmul`: XLA:CPU computes a
  transposed convolution as a convolution over an input dilated with zeros,
  and the GAN generator's steps were 2.2x faster the other way
  (benchmarks/NOTES.md). Other backends keep `lax.conv_transpose`.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    if self.padding not in ('SAME', 'VALID'):
      raise ConfigError(f"ConvTranspose padding {self.padding!r}: use 'SAME' "
                        "or 'VALID'")
    kernel = self.param(
        'kernel', self.kernel_init,
        (*self.kernel_size, x_BxHxWxC.shape[-1], self.features),
        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x_BxHxWxC, kernel, bias,
                                              dtype=self.dtype)
    if jax.default_backend() == 'cpu':
      y = conv_transpose_by_matmul(x, kernel, tuple(self.strides),
                                   self.padding)
    else:
      y = lax.conv_transpose(x, kernel, tuple(self.strides), self.padding,
                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y if bias is None else y + bias
