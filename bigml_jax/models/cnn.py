"""CNN: blocks of conv -> ReLU -> max-pool by 2, then dense layers, over
images [B, H, W, C] (2-D) or sequences [B, L, C] (1-D)."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers


def _kernel(kernel_size: int | Sequence[int], spatial: int) -> tuple[int, ...]:
  """The kernel's size along each of the input's `spatial` axes: an int, or
  one per axis (one size repeated, e.g. the default (3, 3), fits any)."""
  sizes = ((kernel_size,) if isinstance(kernel_size, int)
           else tuple(kernel_size))
  if len(sizes) == spatial:
    return sizes
  if len(set(sizes)) == 1:
    return sizes[:1] * spatial
  raise ConfigError(f'kernel_size {sizes} does not fit {spatial}-D inputs; '
                    f'give {spatial} sizes or one')


def _max_pool_by_2(x: jnp.ndarray) -> jnp.ndarray:
  """Max over windows of 2 (2x2 for images), stride 2, VALID padding."""
  if x.ndim == 4:
    return layers.max_pool_2x2(x)
  b, length, c = x.shape  # A reshape, as max_pool_2x2 (the same reasons).
  x = x[:, :length - length % 2]
  return x.reshape(b, length // 2, 2, c).max(axis=2)


class CNN(nn.Module):
  """Convolutional classifier.

  Input `x`: [B, H, W, C] images, or [B, L, C] sequences (1-D convolutions
  and pooling; [B, L] is read as C = 1); output logits [B, num_classes].
  Each entry of `channels` adds one block conv(kernel_size, SAME) -> ReLU ->
  max-pool by 2, so each spatial size shrinks by 2**len(channels) (rounded
  down); then `dense` hidden layers.

  Attributes:
    channels: output channels of each conv block, e.g. (32, 64).
    dense: widths of the hidden dense layers after the conv blocks.
    num_classes: size of the output layer.
    kernel_size: size of every conv kernel per spatial axis ((3, 3) for
      images, (5,) for sequences), or one int for all axes.
    dropout_rate: dropout before each dense layer (training only).
  """
  channels: Sequence[int]
  dense: Sequence[int]
  num_classes: int
  kernel_size: int | Sequence[int] = (3, 3)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    if x.ndim == 2:
      x = x[..., None]
    if x.ndim not in (3, 4):
      raise ConfigError(f'the CNN takes [B, L, C] sequences or [B, H, W, C] '
                        f'images; got shape {x.shape}')
    kernel = _kernel(self.kernel_size, x.ndim - 2)
    for c in self.channels:
      x = layers.conv(c, kernel, padding='SAME')(x)
      x = _max_pool_by_2(nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    return layers.dense_head(x, self.dense, self.num_classes,
                             self.dropout_rate, train)
