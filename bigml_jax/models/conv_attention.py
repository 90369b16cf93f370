"""Self-attention across the spatial positions of a conv feature map."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers
from bigml_jax.models.attention import ATTENTION_WEIGHTS, attention_weights


def _conv(features: int, kernel_size: Sequence[int], axes: tuple[str, str],
          name: str) -> nn.Conv:
  """SAME conv whose kernel [kh, kw, in, out] has logical names (.., axes)."""
  return nn.Conv(
      features, tuple(kernel_size), padding='SAME', name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, None) + axes),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), axes[1:]))


class ConvAttention(nn.Module):
  """Residual self-attention block over an H x W x C map: [B,H,W,C] -> same.

  With the map's N = H*W positions flattened to rows of X [N, C]:

      Q = conv_q(X),  K = conv_k(X)   [N, qk_features]  (kernel_size, SAME)
      V = conv_v(X)                   [N, v_features]   (kernel_size, SAME)
      A_h = softmax(Q_h K_h^T / sqrt(d_k))              [N, N], per head h
      Y = X + concat_h(A_h V_h) W_o + b_o               [N, C]

  where Q_h, K_h, V_h are head h's slice of the channels, d_k =
  qk_features / num_heads and W_o [v_features, C] is a 1x1 conv. Each output
  position mixes the value vectors of every position, weighted by how well
  its query matches their keys (Zhang et al. 2019, SAGAN, without their
  learned gate on the residual). The output has the input's shape, so the
  block drops in between any two conv layers. Applied with
  `mutable=['intermediates']` it sows A [B, heads, N, N] as
  `attention.ATTENTION_WEIGHTS`.

  Attributes:
    qk_features: width of Q and K over all heads (default C).
    v_features: width of V over all heads (default C).
    num_heads: number of heads; must divide qk_features and v_features.
    kernel_size: spatial size of the Q, K and V convolutions.
  """
  qk_features: int | None = None
  v_features: int | None = None
  num_heads: int = 1
  kernel_size: Sequence[int] = (1, 1)

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x_BxHxWxC.shape
    qk, v = self.qk_features or c, self.v_features or c
    if qk % self.num_heads or v % self.num_heads:
      raise ConfigError(f'num_heads {self.num_heads} must divide qk_features '
                        f'{qk} and v_features {v}')

    def project(features, name):
      y = _conv(features, self.kernel_size, ('embed', 'heads'), name)(x_BxHxWxC)
      return y.reshape(b, h * w, self.num_heads, features // self.num_heads)

    q_BxNxHxK, k_BxNxHxK = project(qk, 'query'), project(qk, 'key')
    v_BxNxHxV = project(v, 'value')
    att_BxHxNxN = attention_weights(q_BxNxHxK, k_BxNxHxK)
    self.sow('intermediates', ATTENTION_WEIGHTS, att_BxHxNxN)
    out_BxNxHxV = jnp.einsum('bhnm,bmhv->bnhv', att_BxHxNxN, v_BxNxHxV)
    out_BxHxWxV = out_BxNxHxV.reshape(b, h, w, v)
    out_BxHxWxC = _conv(c, (1, 1), ('heads', 'embed'), 'out')(out_BxHxWxV)
    return x_BxHxWxC + out_BxHxWxC


class ConvAttentionCNN(nn.Module):
  """CNN with a `ConvAttention` block: [B, H, W, C] -> logits [B, num_classes].

  Conv blocks as in `CNN` (conv -> ReLU -> 2x2 max-pool per entry of
  `channels`); a `ConvAttention` block after block `attention_after` (Python
  indexing: -1 = after the last); then the dense head. On 8x8 digits with
  channels (32, 64) and attention_after=0 the attention spans the 4x4 map.

  Attributes:
    channels: output channels of each conv block.
    dense: widths of the hidden dense layers.
    num_classes: size of the output layer.
    kernel_size: spatial size of every conv kernel in the conv blocks.
    attention_after: index of the conv block the attention follows.
    num_heads: attention heads.
    attention_kernel_size: kernel of the Q, K, V convolutions.
    dropout_rate: dropout before each dense layer (training only).
  """
  channels: Sequence[int]
  dense: Sequence[int]
  num_classes: int
  kernel_size: Sequence[int] = (3, 3)
  attention_after: int = -1
  num_heads: int = 1
  attention_kernel_size: Sequence[int] = (1, 1)
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    attend_at = range(len(self.channels))[self.attention_after]
    for i, c in enumerate(self.channels):
      x = layers.conv(c, self.kernel_size, padding='SAME')(x)
      x = layers.max_pool_2x2(nn.relu(x))
      if i == attend_at:
        x = ConvAttention(num_heads=self.num_heads,
                          kernel_size=self.attention_kernel_size,
                          name='attention')(x)
    x = x.reshape(x.shape[0], -1)
    return layers.dense_head(x, self.dense, self.num_classes,
                             self.dropout_rate, train)
