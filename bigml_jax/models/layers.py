"""Building blocks shared by the models: partition-annotated layers, pooling.

Every parameter carries logical axis names (`embed`, `mlp`, `vocab`, ...) so
the mesh rules in `bigml_jax.parallel.mesh` decide how it is sharded; model
code never names a mesh axis.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

_ACTIVATIONS = ('relu', 'gelu', 'silu', 'tanh', 'sigmoid', 'elu', 'leaky_relu')


def activation(name: str):
  """Returns the `flax.linen` activation called `name`."""
  if name not in _ACTIVATIONS:
    raise ValueError(f'activation {name!r} is unknown; use one of '
                     f'{", ".join(_ACTIVATIONS)}')
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


def conv(features: int, kernel_size: Sequence[int], *, transpose: bool = False,
         **kwargs) -> nn.Conv | nn.ConvTranspose:
  """Conv (or transposed conv) layer whose kernel [kh, kw, in, out] shards
  like a dense layer."""
  return (nn.ConvTranspose if transpose else nn.Conv)(
      features,
      tuple(kernel_size),
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, None, 'embed', 'mlp')),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ('mlp',)),
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
