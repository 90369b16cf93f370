"""Vision Transformer (Dosovitskiy et al. 2021) for small images."""

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers
from bigml_jax.models.embeddings import PositionEmbed
from bigml_jax.models.transformer import TransformerStack, check_remat


class ViT(nn.Module):
  """Images [B, H, W, C] -> logits [B, num_classes].

  Non-overlapping patch_size x patch_size patches are embedded by one conv
  with stride patch_size (= a dense layer on each flattened patch), giving
  N = (H // p) * (W // p) tokens [B, N, d_model]; pixels past the last whole
  patch are dropped. 'cls' pooling prepends a learned [CLS] token and reads
  it out; 'mean' averages the patch tokens. Learned position embeddings,
  `num_layers` pre-LN encoder blocks, then a dense head. On 8x8 digits,
  patch 2 gives 16 tokens and patch 4 gives 4.

  Attributes:
    num_classes: size of the output layer.
    patch_size: side of a square patch.
    d_model, num_layers, num_heads, mlp_dim: encoder size.
    pooling: 'cls' or 'mean'.
    dropout_rate: dropout on embeddings, attention weights and residuals.
    attention_impl: 'einsum', 'xla' or 'cudnn' (see `MultiHeadAttention`).
    remat: per-block rematerialisation policy (see `TransformerStack`).
    dtype: compute dtype name, e.g. 'float32' or 'bfloat16' (params float32).
  """
  num_classes: int
  patch_size: int = 4
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  pooling: str = 'cls'
  dropout_rate: float = 0.0
  attention_impl: str = 'einsum'
  remat: str = 'none'
  dtype: str = 'float32'

  def __post_init__(self):
    check_remat(self.remat)  # A config mistake fails at construction.
    super().__post_init__()

  @nn.compact
  def __call__(self, images: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    if self.pooling not in ('cls', 'mean'):
      raise ConfigError(f"pooling {self.pooling!r} is unknown; use 'cls' or "
                        "'mean'")
    dtype = jnp.dtype(self.dtype)
    x_BxNxD = self._patches(images.astype(dtype), dtype)
    if self.pooling == 'cls':
      cls_1x1xD = self.param(
          'cls', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                              (None, None, 'embed')),
          (1, 1, self.d_model))
      cls_Bx1xD = jnp.broadcast_to(cls_1x1xD,
                                   (x_BxNxD.shape[0], 1, self.d_model))
      x_BxNxD = jnp.concatenate([cls_Bx1xD.astype(dtype), x_BxNxD], axis=1)
    x_BxNxD = PositionEmbed(x_BxNxD.shape[1], name='positions')(x_BxNxD)
    x_BxNxD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxNxD)
    x_BxNxD = TransformerStack(
        self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
        attention_impl=self.attention_impl, remat=self.remat, dtype=dtype,
        name='encoder')(x_BxNxD, None, train)
    x_BxD = x_BxNxD[:, 0] if self.pooling == 'cls' else x_BxNxD.mean(axis=1)
    logits = layers.dense(self.num_classes, ('embed', 'vocab'), dtype=dtype,
                          name='head')(x_BxD)
    return logits.astype(jnp.float32)

  def _patches(self, images, dtype) -> jnp.ndarray:
    """[B, H, W, C] -> patch embeddings [B, N, d_model]."""
    p = self.patch_size
    if images.shape[1] < p or images.shape[2] < p:
      raise ConfigError(f'patch_size {p} is larger than the {images.shape[1]}x'
                        f'{images.shape[2]} images; use a smaller patch_size')
    x = nn.Conv(
        self.d_model, (p, p), strides=(p, p), padding='VALID', dtype=dtype,
        name='patch_embed',
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, None, 'embed')),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros_init(), ('embed',)))(images)
    return x.reshape(x.shape[0], -1, self.d_model)
