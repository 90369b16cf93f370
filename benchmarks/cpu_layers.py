"""Candidate CPU implementations of conv, transposed conv and pooling.

Each computes exactly what the framework's layer computes, from parameters of
the same shapes ([kh, kw, in, out] kernels, [out] biases): only the XLA ops
differ. XLA's CPU backend runs convolutions (and their gradients) through a
generic Eigen path; these rewrite them as one large matmul plus cheap
slicing, which its dot emitter runs near the machine's FLOP rate.

  conv_im2col          patches by k*k shifted (strided) slices -> one matmul
  conv_patches         lax.conv_general_dilated_patches -> one matmul
The transposed conv as one matmul + a sub-pixel overlap-add, first tried
here, is now the library's (`bigml_jax.models.layers.ConvTranspose`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from bigml_jax.models import layers
from bigml_jax.models import attention as attention_lib


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def conv_im2col(x_BxHxWxC, kernel_KxKxCxF, stride: int = 1):
  """SAME conv as concat of k*k shifted slices [B, Ho, Wo, k*k*C] @ [k*k*C, F]."""
  kh, kw, c, f = kernel_KxKxCxF.shape
  _, h, w, _ = x_BxHxWxC.shape
  (ph0, ph1), (pw0, pw1) = _same_pads(h, kh, stride), _same_pads(w, kw, stride)
  x = jnp.pad(x_BxHxWxC, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)))
  ho, wo = -(-h // stride), -(-w // stride)
  cols = [x[:, i:i + stride * (ho - 1) + 1:stride,
            j:j + stride * (wo - 1) + 1:stride, :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)
  return patches @ kernel_KxKxCxF.reshape(kh * kw * c, f)


def conv_patches(x_BxHxWxC, kernel_KxKxCxF, stride: int = 1):
  """SAME conv via lax.conv_general_dilated_patches + one matmul."""
  kh, kw, c, f = kernel_KxKxCxF.shape
  p = lax.conv_general_dilated_patches(
      x_BxHxWxC, (kh, kw), (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  # Patches come out channel-major: feature index = c * kh * kw + (i * kw + j).
  k = kernel_KxKxCxF.transpose(2, 0, 1, 3).reshape(c * kh * kw, f)
  return p @ k


class FusedQKVAttention(attention_lib.MultiHeadAttention):
  """`MultiHeadAttention` whose self-attention Q, K, V come from one
  [D, 3, H, d_k] projection (one matmul, one gradient matmul) instead of
  three: the same parameter count, stacked."""

  @nn.compact
  def __call__(self, x_BxLxD, context_BxSxD=None, *, mask=None,
               causal: bool = False, train: bool = False):
    assert context_BxSxD is None, 'self-attention only'
    features = self.qkv_features or x_BxLxD.shape[-1]
    head_shape = (self.num_heads, features // self.num_heads)
    qkv = attention_lib._dense_general(  # pylint: disable=protected-access
        (3, *head_shape), ('embed', None, 'heads', 'kv'), dtype=self.dtype,
        name='qkv')(x_BxLxD)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (qkv[:, :, i] for i in range(3))
    out_BxLxHxK = self.attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask,
                              causal=causal, train=train)
    return attention_lib._dense_general(  # pylint: disable=protected-access
        self.out_features or x_BxLxD.shape[-1], ('heads', 'kv', 'embed'),
        axis=(-2, -1), dtype=self.dtype, name='out')(out_BxLxHxK)


def max_pool_reduce_window(x):
  return nn.max_pool(x, (2, 2), (2, 2))


class Conv(nn.Module):
  """`layers.conv` (SAME) with a choice of implementation; same params."""
  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  impl: str = 'lax'  # 'lax' | 'im2col' | 'patches'

  @nn.compact
  def __call__(self, x):
    if self.impl == 'lax':
      return layers.conv(self.features, self.kernel_size,
                         strides=(self.strides,) * 2, padding='SAME')(x)
    kernel = self.param(
        'kernel', nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, 'embed', 'mlp')),
        (*self.kernel_size, x.shape[-1], self.features))
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('mlp',)), (self.features,))
    fn = conv_im2col if self.impl == 'im2col' else conv_patches
    return fn(x, kernel, self.strides) + bias


class ConvTranspose(nn.Module):
  """The DCGAN generator's transposed conv with a choice of implementation."""
  features: int
  impl: str = 'lax'  # 'lax' | 'matmul'

  @nn.compact
  def __call__(self, x):
    kernel_init = nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, 'embed', 'mlp'))
    bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             ('mlp',))
    if self.impl == 'lax':
      return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2),
                              kernel_init=kernel_init, bias_init=bias_init)(x)
    kernel = self.param('kernel', kernel_init,
                        (4, 4, x.shape[-1], self.features))
    bias = self.param('bias', bias_init, (self.features,))
    return layers.conv_transpose_by_matmul(x, kernel, (2, 2), 'SAME') + bias


class CNN(nn.Module):
  """bigml_jax.models.CNN (dropout 0) with swappable conv and pooling."""
  channels: Sequence[int]
  dense: Sequence[int]
  num_classes: int
  conv: str = 'lax'
  pool: str = 'reshape'  # 'reshape' (the framework's) | 'reduce_window'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    pool = (layers.max_pool_2x2 if self.pool == 'reshape'
            else max_pool_reduce_window)
    for c in self.channels:
      x = pool(nn.relu(Conv(c, (3, 3), impl=self.conv)(x)))
    x = x.reshape(x.shape[0], -1)
    for width in self.dense:
      x = nn.relu(layers.dense(width, ('embed', 'mlp'))(x))
    return layers.dense(self.num_classes, ('embed', 'vocab'))(x)


class DCGANGenerator(nn.Module):
  """bigml_jax.models.DCGANGenerator (kernel 4) with swappable convT."""
  output_shape: Sequence[int]
  latent_dim: int
  channels: Sequence[int]
  impl: str = 'lax'

  @nn.compact
  def __call__(self, z, *, train: bool = False):
    del train
    h, w, c = self.output_shape
    s = 2 ** len(self.channels)
    x = layers.dense(h // s * (w // s) * self.channels[0], ('embed', 'mlp'))(z)
    x = nn.relu(x).reshape(z.shape[0], h // s, w // s, self.channels[0])
    for features in self.channels[1:]:
      x = nn.relu(ConvTranspose(features, self.impl)(x))
    return nn.sigmoid(ConvTranspose(c, self.impl)(x))


class DCGANDiscriminator(nn.Module):
  """bigml_jax.models.DCGANDiscriminator (kernel 4) with swappable conv."""
  channels: Sequence[int]
  impl: str = 'lax'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    for features in self.channels:
      x = nn.leaky_relu(Conv(features, (4, 4), 2, self.impl)(x), 0.2)
    x = x.reshape(x.shape[0], -1)
    return layers.dense(1, ('embed', 'vocab'))(x)[:, 0]


@jax.jit
def _differences(x, k3x3, k4x4):
  dn = ('NHWC', 'HWIO', 'NHWC')
  ref = lambda k, s: lax.conv_general_dilated(x, k, (s, s), 'SAME',
                                              dimension_numbers=dn)
  diff = lambda a, b: jnp.max(jnp.abs(a - b))
  return {
      'im2col 3x3 s1': diff(conv_im2col(x, k3x3), ref(k3x3, 1)),
      'im2col 4x4 s2': diff(conv_im2col(x, k4x4, 2), ref(k4x4, 2)),
      'patches 3x3 s1': diff(conv_patches(x, k3x3), ref(k3x3, 1)),
  }


def max_abs_differences(seed: int = 0) -> dict[str, float]:
  """Each candidate against the lax op it replaces, on random inputs of odd
  and even sizes."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  out = _differences(jax.random.normal(k1, (2, 9, 8, 3)),
                     jax.random.normal(k2, (3, 3, 3, 5)),
                     jax.random.normal(k3, (4, 4, 3, 5)))
  return {k: float(v) for k, v in out.items()}
