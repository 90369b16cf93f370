"""CNN: blocks of conv -> ReLU -> 2x2 max-pool, then dense layers."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.models import layers


class CNN(nn.Module):
  """Convolutional classifier.

  Input `x`: [B, H, W, C] images; output logits [B, num_classes]. Each entry of
  `channels` adds one block conv(kernel_size, SAME) -> ReLU -> pool 2x2, so H
  and W shrink by 2**len(channels) (rounded down); then `dense` hidden layers.

  Attributes:
    channels: output channels of each conv block, e.g. (32, 64).
    dense: widths of the hidden dense layers after the conv blocks.
    num_classes: size of the output layer.
    kernel_size: spatial size of every conv kernel.
    dropout_rate: dropout before each dense layer (training only).
  """
  channels: Sequence[int]
  dense: Sequence[int]
  num_classes: int
  kernel_size: Sequence[int] = (3, 3)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    for c in self.channels:
      x = layers.conv(c, self.kernel_size, padding='SAME')(x)
      x = layers.max_pool_2x2(nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    return layers.dense_head(x, self.dense, self.num_classes,
                             self.dropout_rate, train)
