"""GAN networks: DCGAN-style convolutional ones for images, MLPs for points.

A generator maps noise z [B, latent_dim] to samples [B, *output_shape]; a
discriminator maps samples [B, ...] to one logit per example [B] (> 0: "real").
Image generators end in a sigmoid because the pipeline's images are in [0, 1].
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers


class DCGANGenerator(nn.Module):
  """Dense -> reshape -> stride-2 transposed convs (Radford et al., 2016).

  Input z [B, latent_dim]; output images [B, H, W, C] in [0, 1], where
  (H, W, C) = output_shape. The dense layer makes a (H, W) / 2**len(channels)
  grid of channels[0] features; each entry of `channels` then doubles the grid
  with one transposed conv, the last one producing C channels. Batch norm is
  left out so the generator stays a pure function of its params.

  Attributes:
    output_shape: (H, W, C); H and W divisible by 2**len(channels).
    latent_dim: size of the noise vector z.
    channels: features of the starting grid and of each upsampled grid but
      the last, e.g. (64, 32) for 2x2x64 -> 4x4x32 -> 8x8xC.
    kernel_size: spatial size of every transposed conv kernel.
  """
  output_shape: Sequence[int]
  latent_dim: int = 64
  channels: Sequence[int] = (64, 32)
  kernel_size: Sequence[int] = (4, 4)

  @nn.compact
  def __call__(self, z: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    del train  # Same network in training and sampling.
    h, w, c = self.output_shape
    scale = 2 ** len(self.channels)
    if h % scale or w % scale:
      raise ConfigError(f'output_shape {tuple(self.output_shape)} must have H '
                        f'and W divisible by 2**len(channels) = {scale}')
    # Output features unsharded: they are reshaped into a grid (see
    # layers.conv on why channels stay off the tensor axis).
    x = layers.dense(h // scale * (w // scale) * self.channels[0],
                     ('embed', None))(z)
    x = nn.relu(x).reshape(z.shape[0], h // scale, w // scale,
                           self.channels[0])
    for features in self.channels[1:]:
      x = layers.conv(features, self.kernel_size, strides=(2, 2),
                      transpose=True)(x)
      x = nn.relu(x)
    x = layers.conv(c, self.kernel_size, strides=(2, 2), transpose=True)(x)
    return nn.sigmoid(x)


class DCGANDiscriminator(nn.Module):
  """Stride-2 convs with leaky ReLU (slope 0.2, as in DCGAN) -> one logit.

  Input images [B, H, W, C]; output logits [B]. Each entry of `channels` is
  one conv(kernel_size, stride 2, SAME), halving H and W (rounded up).

  Attributes:
    channels: output channels of each conv, e.g. (32, 64).
    kernel_size: spatial size of every conv kernel.
  """
  channels: Sequence[int] = (32, 64)
  kernel_size: Sequence[int] = (4, 4)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    del train
    for features in self.channels:
      x = layers.conv(features, self.kernel_size, strides=(2, 2),
                      padding='SAME')(x)
      x = nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    return layers.dense(1, ('embed', 'vocab'))(x)[:, 0]


class MLPGenerator(nn.Module):
  """Noise z [B, latent_dim] -> hidden ReLU layers -> linear [B, *output_shape].

  The output is unbounded: for low-dimensional data such as 2-D points.

  Attributes:
    output_shape: shape of one sample, e.g. (2,).
    latent_dim: size of the noise vector z.
    features: widths of the hidden layers.
  """
  output_shape: Sequence[int]
  latent_dim: int = 16
  features: Sequence[int] = (128, 128)

  @nn.compact
  def __call__(self, z: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    del train
    x = z
    *hidden, out = layers.chain_axes(len(self.features), 'vocab')
    for width, axes in zip(self.features, hidden):
      x = nn.relu(layers.dense(width, axes)(x))
    x = layers.dense(math.prod(self.output_shape), out)(x)
    return x.reshape(z.shape[0], *self.output_shape)


class MLPDiscriminator(nn.Module):
  """Samples [B, ...] (flattened) -> hidden leaky-ReLU layers -> logits [B].

  Attributes:
    features: widths of the hidden layers.
  """
  features: Sequence[int] = (128, 128)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    del train
    x = x.reshape(x.shape[0], -1)
    *hidden, out = layers.chain_axes(len(self.features), 'vocab')
    for width, axes in zip(self.features, hidden):
      x = nn.leaky_relu(layers.dense(width, axes)(x), 0.2)
    return layers.dense(1, out)(x)[:, 0]
