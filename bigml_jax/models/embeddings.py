"""Token embeddings, the normalised weighted-sum composition, positions.

Tables carry logical names ('vocab', 'embed'; position tables 'length',
which no rule shards) so the mesh rules shard them like every other weight.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers
from bigml_jax.vocab import PAD_ID

# Rows of a [vocab, embed] table have unit expected squared norm, whether the
# table embeds tokens or, tied, scores them against the final hidden state.
_embed_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal',
                                               out_axis=0)


class Embed(nn.Module):
  """Token embedding table [vocab_size, features] with tied output logits.

  `__call__`: token ids [...] int -> vectors [..., features].
  `attend`: hidden states [..., features] -> logits [..., vocab_size], the
  dot product with every row of the same table (tied input/output embeddings).

  Attributes:
    vocab_size: number of token ids.
    features: embedding width (the model's 'embed' dim).
    dtype: compute dtype of the outputs; the table stays float32.
  """
  vocab_size: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = self.param(
        'embedding',
        nn.with_logical_partitioning(_embed_init, ('vocab', 'embed')),
        (self.vocab_size, self.features), jnp.float32)

  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

  def attend(self, x: jnp.ndarray) -> jnp.ndarray:
    table = self.embedding.astype(self.dtype)
    return jnp.einsum('...d,vd->...v', x.astype(self.dtype), table)


def normalized_weighted_sum(v_BxNxD: jnp.ndarray, a_BxN: jnp.ndarray,
                            eps: float = 1e-6) -> jnp.ndarray:
  """e = v / ||v|| with v = sum_n a_n v_n: [B, N, D], [B, N] -> [B, D].

  A zero weight drops a position (use it for padding); a bag whose weighted
  sum is zero maps to the zero vector instead of dividing by zero.
  """
  v_BxD = jnp.einsum('bn,bnd->bd', a_BxN.astype(v_BxNxD.dtype), v_BxNxD)
  norm_Bx1 = jnp.linalg.norm(v_BxD.astype(jnp.float32), axis=-1, keepdims=True)
  return (v_BxD / jnp.maximum(norm_Bx1, eps)).astype(v_BxNxD.dtype)


class ComposedEmbed(nn.Module):
  """Embeds a word as the normalised weighted sum of its sub-token vectors.

  For a word (or sentence) w made of sub-tokens w_1..w_N (characters,
  subword pieces or words; PAD_ID is padding):

      e(w) = (1 / ||v_w||) * v_w,   v_w = sum_n a_n v_{w_n}

  where v_{w_n} is row w_n of a learned [vocab_size, features] table, v_w is
  the unnormalised sum and a_n is the weight of the n-th sub-token:
  'uniform' gives a_n = 1 for every real sub-token, 'learned' gives
  a_n = softplus(s_{w_n}) with one learned scalar per vocabulary entry, so the
  model learns how much each sub-token counts (softplus keeps it positive;
  s starts where softplus(s) = 1). Pad positions have a_n = 0. Any common
  scale of the a_n cancels in the normalisation, so 'uniform' is the mean.

  Input: token ids [B, N]; output: unit vectors [B, features].

  Attributes:
    vocab_size: number of sub-token ids.
    features: embedding width.
    weighting: 'uniform' or 'learned'.
  """
  vocab_size: int
  features: int
  weighting: str = 'uniform'

  @nn.compact
  def __call__(self, tokens_BxN: jnp.ndarray) -> jnp.ndarray:
    if self.weighting not in ('uniform', 'learned'):
      raise ConfigError(f'weighting {self.weighting!r} is unknown; use '
                        "'uniform' or 'learned'")
    v_BxNxD = Embed(self.vocab_size, self.features, name='embed')(tokens_BxN)
    a_BxN = (tokens_BxN != PAD_ID).astype(jnp.float32)
    if self.weighting == 'learned':
      s_V = self.param(
          'token_weight',
          nn.with_logical_partitioning(
              nn.initializers.constant(np.log(np.e - 1.0)), ('vocab',)),
          (self.vocab_size,), jnp.float32)
      a_BxN = a_BxN * nn.softplus(jnp.take(s_V, tokens_BxN, axis=0))
    return normalized_weighted_sum(v_BxNxD, a_BxN)


class BagOfEmbeddingsClassifier(nn.Module):
  """A text classifier on the sentence vector of `ComposedEmbed`: the
  normalised weighted sum of its token vectors (the product's seed formula),
  then `hidden` ReLU layers (none: a linear read-out) and the class logits.

  Input: token ids [B, N] (PAD_ID is padding); output: logits
  [B, num_classes].
  """
  vocab_size: int
  num_classes: int
  features: int = 128
  weighting: str = 'learned'
  hidden: Sequence[int] = ()
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, tokens_BxN: jnp.ndarray, train: bool = False
               ) -> jnp.ndarray:
    e_BxD = ComposedEmbed(self.vocab_size, self.features, self.weighting,
                          name='bag')(tokens_BxN)
    return layers.dense_head(e_BxD, tuple(self.hidden), self.num_classes,
                             self.dropout_rate, train)


def sinusoidal_positions(length: int, features: int) -> np.ndarray:
  """The fixed [length, features] table of Vaswani et al. (2017), sec. 3.5.

  Column 2i is sin(pos / 10000^(2i/features)), column 2i+1 the cosine; an
  odd `features` drops the last cosine column.
  """
  pos_Lx1 = np.arange(length)[:, None]
  inv_freq = np.exp(-np.log(10000.0) * np.arange(0, features, 2) / features)
  table_LxD = np.zeros((length, features + features % 2), np.float32)
  table_LxD[:, 0::2] = np.sin(pos_Lx1 * inv_freq)
  table_LxD[:, 1::2] = np.cos(pos_Lx1 * inv_freq)
  return table_LxD[:, :features]


class PositionEmbed(nn.Module):
  """Adds position embeddings: [B, L, D] -> [B, L, D], L <= max_len.

  Attributes:
    max_len: longest sequence the table covers.
    kind: 'learned' (a [max_len, D] parameter, N(0, 0.02) as in BERT) or
      'sinusoidal' (fixed, no parameters).
  """
  max_len: int
  kind: str = 'learned'

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, offset: Any = 0) -> jnp.ndarray:
    """`offset` (an int or a traced scalar): the position of x's first row,
    for decoding one position at a time."""
    _, length, features = x_BxLxD.shape
    if length > self.max_len:
      raise ConfigError(f'sequence length {length} exceeds max_len '
                        f'{self.max_len}; raise max_len in config.model')
    if self.kind == 'learned':
      table_LxD = self.param(
          'pos_embedding',
          nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                       ('length', 'embed')),
          (self.max_len, features), jnp.float32)
    elif self.kind == 'sinusoidal':
      table_LxD = jnp.asarray(sinusoidal_positions(self.max_len, features))
    else:
      raise ConfigError(f'position embedding {self.kind!r} is unknown; use '
                        "'learned' or 'sinusoidal'")
    rows_LxD = jax.lax.dynamic_slice_in_dim(table_LxD, offset, length)
    return x_BxLxD + rows_LxD[None].astype(x_BxLxD.dtype)
