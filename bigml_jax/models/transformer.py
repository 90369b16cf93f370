"""Transformer blocks, BERT-style classifier and masked LM, GPT-style LM.

Blocks are pre-LN by default, after Xiong et al. (2020), "On Layer
Normalization in the Transformer Architecture": LayerNorm sits inside each
residual branch and one final LayerNorm closes the stack, which trains
without the warmup-sensitive instabilities of post-LN. Options give the
published architectures, so their weights load (`bigml_jax.interop.hf`):
BERT's post-LN blocks, token-type embeddings, embedding LayerNorm and pooler,
exact or tanh GELU and the LayerNorm epsilon. Every dense layer, attention
projection and LayerNorm has a bias, as BERT's and GPT-2's do.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models import layers
from bigml_jax.models.attention import MultiHeadAttention, padding_mask
from bigml_jax.models.embeddings import (Embed, PositionEmbed,
                                         normalized_weighted_sum)
from bigml_jax.vocab import EOS_ID, PAD_ID

POOLINGS = ('cls', 'mean', 'normalized_sum')
NORMS = ('pre', 'post')
# GELU as 0.5 x (1 + tanh(...)) (GPT-2's 'gelu_new', flax's default) or
# with the exact erf (BERT's 'gelu').
GELUS = ('tanh', 'exact')

# What a rematerialised block keeps from its forward pass for the backward
# pass; everything else in the block is recomputed. 'none' keeps everything
# (no remat).
REMAT_POLICIES = {
    'full': None,  # Only the block's input: least memory, most recompute.
    'dots': jax.checkpoint_policies.dots_saveable,  # Every matmul output.
    # Matmuls with no batch dimension (projections, MLP), not attention's
    # QK^T and AV: MaxText's 'minimal'.
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check_remat(remat: str) -> None:
  if remat != 'none' and remat not in REMAT_POLICIES:
    raise ConfigError(f'remat {remat!r} is unknown; use one of none, '
                      f'{", ".join(REMAT_POLICIES)}')


def check_options(model: nn.Module) -> None:
  """Raises ConfigError, at construction, for an unknown remat, norm or gelu
  of `model` (any of the three it has)."""
  check_remat(getattr(model, 'remat', 'none'))
  for field, allowed in (('norm', NORMS), ('gelu', GELUS)):
    value = getattr(model, field, allowed[0])
    if value not in allowed:
      raise ConfigError(f'{field} {value!r} is unknown; use one of '
                        f'{", ".join(allowed)}')


def layer_norm(dtype: Any, name: str | None = None,
               epsilon: float = 1e-6) -> nn.LayerNorm:
  """LayerNorm whose scale and bias [embed] carry the 'embed' name."""
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                              ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                             ('embed',)))


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> dropout -> Dense(D): [B, L, D] -> [B, L, D].

  `gelu`: 'tanh' (the approximation) or 'exact' (erf).
  """
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  gelu: str = 'tanh'

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, train: bool) -> jnp.ndarray:
    # Tokens as one [B*L, D] matrix: the weight gradients are then plain
    # [N, in]^T [N, out] dots. Over [B, L, D] they contract two dims, which
    # XLA:CPU runs as a transposed copy plus a slower dot (the transformer
    # step was 1.06x faster this way; benchmarks/NOTES.md).
    d = x_BxLxD.shape[-1]
    h_NxF = layers.dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                         name='hidden')(x_BxLxD.reshape(-1, d))
    h_NxF = nn.Dropout(self.dropout_rate, deterministic=not train)(
        nn.gelu(h_NxF, approximate=self.gelu == 'tanh'))
    y_NxD = layers.dense(d, ('mlp', 'embed'), dtype=self.dtype,
                         name='out')(h_NxF)
    return y_NxD.reshape(x_BxLxD.shape)


class EncoderBlock(nn.Module):
  """Transformer block: [B, L, D] (+ mask) -> [B, L, D]. Pre-LN (default):

      x = x + Dropout(MHA(LN(x), mask))
      x = x + Dropout(MLP(LN(x)))

  or post-LN (the original Transformer's and BERT's), under the same
  parameter names:

      x = LN(x + Dropout(MHA(x, mask)))
      x = LN(x + Dropout(MLP(x)))

  `mask` is boolean, broadcastable to [B, H, L, L] (see attention.py).
  `train` is positional so `nn.remat` can treat it as static.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP.
    dropout_rate: dropout on attention weights and on both residual branches.
    causal: each position attends only to itself and earlier ones.
    attention_impl: `MultiHeadAttention.implementation`.
    decode: `MultiHeadAttention.decode` (a key/value cache).
    dtype: compute dtype.
    norm: 'pre' or 'post' LayerNorm.
    gelu: the MLP's GELU, 'tanh' or 'exact'.
    layer_norm_epsilon: added to the variance in every LayerNorm.
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  causal: bool = False
  attention_impl: str = 'einsum'
  decode: bool = False
  dtype: Any = jnp.float32
  norm: str = 'pre'
  gelu: str = 'tanh'
  layer_norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, mask: jnp.ndarray | None,
               train: bool) -> jnp.ndarray:
    drop = lambda y: nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    ln = lambda name, y: layer_norm(self.dtype, name,
                                    self.layer_norm_epsilon)(y)
    keep = lambda name, y: y
    pre, post = (ln, keep) if self.norm == 'pre' else (keep, ln)
    h_BxLxD = MultiHeadAttention(
        self.num_heads, dropout_rate=self.dropout_rate,
        implementation=self.attention_impl, decode=self.decode,
        dtype=self.dtype, name='attention')(
            pre('ln_attention', x_BxLxD), mask=mask, causal=self.causal,
            train=train)
    x_BxLxD = post('ln_attention', x_BxLxD + drop(h_BxLxD))
    h_BxLxD = MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype,
                       gelu=self.gelu, name='mlp')(
                           pre('ln_mlp', x_BxLxD), train)
    return post('ln_mlp', x_BxLxD + drop(h_BxLxD))


class DecoderBlock(EncoderBlock):
  """The decoder-only (GPT) block: an `EncoderBlock` with causal attention.

  There is no cross-attention; position t sees positions <= t only.
  """
  causal: bool = True


class TransformerStack(nn.Module):
  """`num_layers` blocks: [B, L, D] -> same. Pre-LN blocks are followed by a
  final LayerNorm; post-LN ones end normalised already.

  Attributes:
    num_layers, num_heads, mlp_dim, dropout_rate, causal, attention_impl,
      dtype, norm, gelu, layer_norm_epsilon: as in `EncoderBlock`
      (causal=True stacks `DecoderBlock`s).
    remat: 'none', or a `REMAT_POLICIES` name: recompute each block's
      activations in the backward pass (`nn.remat`) but for what the policy
      keeps, trading compute for memory; outputs and gradients are the same.
    decode: the blocks' attention keeps a key/value cache (inference).
  """
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  causal: bool = False
  attention_impl: str = 'einsum'
  remat: str = 'none'
  decode: bool = False
  dtype: Any = jnp.float32
  norm: str = 'pre'
  gelu: str = 'tanh'
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    check_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, mask: jnp.ndarray | None,
               train: bool) -> jnp.ndarray:
    block_cls = DecoderBlock if self.causal else EncoderBlock
    if self.remat != 'none' and not self.decode:  # Remat is for gradients.
      # Counting self as 0, `train` is argument 3.
      block_cls = nn.remat(block_cls, static_argnums=(3,),
                           policy=REMAT_POLICIES[self.remat])
    for i in range(self.num_layers):
      x_BxLxD = block_cls(
          self.num_heads, self.mlp_dim, self.dropout_rate,
          attention_impl=self.attention_impl, decode=self.decode,
          dtype=self.dtype, norm=self.norm, gelu=self.gelu,
          layer_norm_epsilon=self.layer_norm_epsilon,
          name=f'block_{i}')(x_BxLxD, mask, train)
    if self.norm == 'post':
      return x_BxLxD
    return layer_norm(self.dtype, 'final_norm',
                      self.layer_norm_epsilon)(x_BxLxD)


def pool(x_BxLxD: jnp.ndarray, valid_BxL: jnp.ndarray,
         kind: str) -> jnp.ndarray:
  """[B, L, D] -> [B, D]: 'cls' (position 0), 'mean' over valid positions, or
  'normalized_sum' (`embeddings.normalized_weighted_sum`, a_n = 1 on valid
  positions: the mean direction, unit length)."""
  if kind == 'cls':
    return x_BxLxD[:, 0]
  weights_BxL = valid_BxL.astype(x_BxLxD.dtype)
  if kind == 'normalized_sum':
    return normalized_weighted_sum(x_BxLxD, weights_BxL)
  count_Bx1 = jnp.maximum(weights_BxL.sum(-1, keepdims=True), 1.0)
  return jnp.einsum('bld,bl->bd', x_BxLxD, weights_BxL) / count_Bx1


def _encode(bert: nn.Module, x_BxLxD: jnp.ndarray, valid_BxL: jnp.ndarray,
            token_types_BxL: jnp.ndarray | None, train: bool) -> jnp.ndarray:
  """Positions (+ token types) (-> LayerNorm) -> dropout -> encoder stack, as
  submodules of `bert` (called from its compact `__call__`): `BertClassifier`
  and `BertMLM` share these parameter names, so one's checkpoint initialises
  the other."""
  dtype = jnp.dtype(bert.dtype)
  x_BxLxD = PositionEmbed(bert.max_len, bert.position_embedding,
                          name='positions')(x_BxLxD)
  if bert.type_vocab_size:
    if token_types_BxL is None:  # One segment: BERT's type 0.
      token_types_BxL = jnp.zeros(x_BxLxD.shape[:2], jnp.int32)
    x_BxLxD = x_BxLxD + Embed(bert.type_vocab_size, bert.d_model, dtype,
                              name='token_types')(token_types_BxL)
  if bert.embed_norm:
    x_BxLxD = layer_norm(dtype, 'embed_norm',
                         bert.layer_norm_epsilon)(x_BxLxD)
  x_BxLxD = nn.Dropout(bert.dropout_rate, deterministic=not train)(x_BxLxD)
  return TransformerStack(
      bert.num_layers, bert.num_heads, bert.mlp_dim, bert.dropout_rate,
      attention_impl=bert.attention_impl, remat=bert.remat, dtype=dtype,
      norm=bert.norm, gelu=bert.gelu,
      layer_norm_epsilon=bert.layer_norm_epsilon, name='encoder')(
          x_BxLxD, padding_mask(valid_BxL), train)


class BertClassifier(nn.Module):
  """BERT-style encoder classifier: token ids [B, L] -> logits [B, num_classes].

  Token + position (+ token-type) embeddings (-> LayerNorm) -> dropout ->
  `num_layers` encoder blocks (pad keys masked out) -> pooling (-> pooler)
  -> dropout -> dense. 'cls' pooling reads position 0, so the data must put
  a [CLS] token there. With norm='post', type_vocab_size=2, embed_norm,
  pooler, gelu='exact' and pooling='cls' it is Hugging Face's
  `BertForSequenceClassification`. Logits are float32 whatever `dtype` is.

  Attributes:
    vocab_size: number of token ids.
    num_classes: size of the output layer.
    num_layers, d_model, num_heads, mlp_dim: encoder size.
    max_len: longest sequence (size of the position table).
    pooling: 'cls', 'mean' (over non-pad tokens) or 'normalized_sum'.
    dropout_rate: dropout on embeddings, attention weights, residual branches
      and the pooled vector.
    position_embedding: 'learned' or 'sinusoidal'.
    attention_impl: 'einsum', 'xla' or 'cudnn' (see `MultiHeadAttention`).
    remat: per-block rematerialisation policy (see `TransformerStack`).
    dtype: compute dtype name, e.g. 'float32' or 'bfloat16' (params float32).
    pooler: dense -> tanh on the pooled vector (BERT's pooler).
    norm: 'pre' (default) or 'post' LayerNorm blocks (BERT's).
    type_vocab_size: token-type (segment) embeddings added to the input,
      BERT's 2; 0 = none. Without `token_types_BxL` every token is type 0.
    embed_norm: a LayerNorm on the summed embeddings (BERT's).
    gelu: 'tanh' (default) or 'exact' (BERT's).
    layer_norm_epsilon: of every LayerNorm (BERT 1e-12, GPT-2 1e-5).
    pad_id: the token id that is padding (its keys are masked out).
  """
  vocab_size: int
  num_classes: int
  num_layers: int = 2
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 128
  pooling: str = 'cls'
  dropout_rate: float = 0.1
  position_embedding: str = 'learned'
  attention_impl: str = 'einsum'
  remat: str = 'none'
  dtype: str = 'float32'
  pooler: bool = False
  norm: str = 'pre'
  type_vocab_size: int = 0
  embed_norm: bool = False
  gelu: str = 'tanh'
  layer_norm_epsilon: float = 1e-6
  pad_id: int = PAD_ID

  def __post_init__(self):
    check_options(self)  # A config mistake fails at construction.
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens_BxL: jnp.ndarray, *,
               token_types_BxL: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    if self.pooling not in POOLINGS:
      raise ConfigError(f'pooling {self.pooling!r} is unknown; use one of '
                        f'{", ".join(POOLINGS)}')
    dtype = jnp.dtype(self.dtype)
    valid_BxL = tokens_BxL != self.pad_id
    x_BxLxD = Embed(self.vocab_size, self.d_model, dtype, name='embed')(
        tokens_BxL)
    x_BxLxD = _encode(self, x_BxLxD, valid_BxL, token_types_BxL, train)
    x_BxD = pool(x_BxLxD, valid_BxL, self.pooling)
    if self.pooler:
      # Output dim unnamed, as BertMLM's transform (see there).
      x_BxD = nn.tanh(layers.dense(self.d_model, ('embed', None), dtype=dtype,
                                   name='pooler')(x_BxD))
    x_BxD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxD)
    logits = layers.dense(self.num_classes, ('embed', 'vocab'), dtype=dtype,
                          name='head')(x_BxD)
    return logits.astype(jnp.float32)


class BertMLM(nn.Module):
  """BERT-style masked LM: token ids [B, L] (+ masked [B, L] bool) -> logits
  [B, L, vocab], for pretraining an encoder that `BertClassifier` fine-tunes.

  The encoder is `BertClassifier`'s, under the same parameter names (embed,
  positions, encoder), so `--config.init_from` a BertMLM run loads it into a
  classifier. At `masked` positions the model reads a [MASK]: the token
  `mask_id` if set (a tokenizer's [MASK], as in Hugging Face's BERT), else a
  learned mask embedding. The head is BERT's: dense -> GELU -> LayerNorm ->
  logits against the tied embedding table plus a bias. With the options of
  `BertClassifier`'s docstring it is Hugging Face's `BertForMaskedLM`.
  Logits are float32 whatever `dtype` is.

  Attributes: as `BertClassifier`'s, without num_classes, pooling and
  pooler, and
    mask_id: the [MASK] token's id, or None for a learned mask embedding
      (the 'mask_embedding' parameter).
  """
  vocab_size: int
  num_layers: int = 2
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 128
  dropout_rate: float = 0.1
  position_embedding: str = 'learned'
  attention_impl: str = 'einsum'
  remat: str = 'none'
  dtype: str = 'float32'
  norm: str = 'pre'
  type_vocab_size: int = 0
  embed_norm: bool = False
  gelu: str = 'tanh'
  layer_norm_epsilon: float = 1e-6
  pad_id: int = PAD_ID
  mask_id: int | None = None

  def __post_init__(self):
    check_options(self)
    super().__post_init__()

  @nn.compact
  def __call__(self, tokens_BxL: jnp.ndarray,
               masked_BxL: jnp.ndarray | None = None, *,
               token_types_BxL: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    dtype = jnp.dtype(self.dtype)
    embed = Embed(self.vocab_size, self.d_model, dtype, name='embed')
    valid_BxL = tokens_BxL != self.pad_id
    if self.mask_id is not None:
      if masked_BxL is not None:
        tokens_BxL = jnp.where(masked_BxL, self.mask_id, tokens_BxL)
      x_BxLxD = embed(tokens_BxL)
    else:
      x_BxLxD = embed(tokens_BxL)
      mask_D = self.param('mask_embedding', nn.with_logical_partitioning(
          nn.initializers.normal(0.02), ('embed',)), (self.d_model,))
      if masked_BxL is not None:
        x_BxLxD = jnp.where(masked_BxL[..., None], mask_D.astype(dtype),
                            x_BxLxD)
    x_BxLxD = _encode(self, x_BxLxD, valid_BxL, token_types_BxL, train)
    # Output dim unnamed (replicated): naming it 'mlp' would make XLA
    # reshard it to 'embed' for the LayerNorm, which it computes wrongly on
    # meshes with fsdp and tensor > 1 (layers.chain_axes).
    h_BxLxD = layers.dense(self.d_model, ('embed', None), dtype=dtype,
                           name='mlm_transform')(x_BxLxD)
    h_BxLxD = layer_norm(dtype, 'mlm_norm', self.layer_norm_epsilon)(
        nn.gelu(h_BxLxD, approximate=self.gelu == 'tanh'))
    bias_V = self.param('mlm_bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('vocab',)), (self.vocab_size,))
    return (embed.attend(h_BxLxD) + bias_V.astype(dtype)).astype(jnp.float32)


class GPTLM(nn.Module):
  """GPT-style causal LM: token ids [B, L] -> next-token logits [B, L, vocab].

  Token + position embeddings -> dropout -> `num_layers` pre-LN decoder
  blocks -> logits against the same embedding table (tied input/output
  embeddings): with learned positions, Hugging Face's `GPT2LMHeadModel`
  (gelu='tanh', layer_norm_epsilon=1e-5). Logits at t depend on tokens <= t
  only, so right padding
  never changes the logits of real tokens; mask pad targets in the loss.
  `from_embeddings` runs the model from embeddings [B, L, D], e.g. to
  differentiate with respect to them. Logits are float32 whatever `dtype` is.

  Attributes:
    vocab_size: number of token ids.
    num_layers, d_model, num_heads, mlp_dim: decoder size.
    max_len: longest sequence (size of the position table).
    dropout_rate: dropout on embeddings, attention weights and residuals.
    position_embedding: 'learned' or 'sinusoidal'.
    attention_impl: 'einsum', 'xla' or 'cudnn' (see `MultiHeadAttention`).
    remat: per-block rematerialisation policy (see `TransformerStack`).
    decode: keep a key/value cache, for `sampling.generate`: each call
      reads the next positions after those already cached ('cache'
      collection, sized at init by a [B, max_len] input; apply with
      mutable=['cache']).
    dtype: compute dtype name, e.g. 'float32' or 'bfloat16' (params float32).
    gelu: 'tanh' (GPT-2's) or 'exact'.
    layer_norm_epsilon: of every LayerNorm.
    pad_id, eos_id: its tokenizer's padding (None: it has none, as GPT-2)
      and end-of-document ids, which the LM task masks and samples with;
      the model itself reads neither.
  """
  vocab_size: int
  num_layers: int = 2
  d_model: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 256
  dropout_rate: float = 0.0
  position_embedding: str = 'learned'
  attention_impl: str = 'einsum'
  remat: str = 'none'
  decode: bool = False
  dtype: str = 'float32'
  gelu: str = 'tanh'
  layer_norm_epsilon: float = 1e-6
  pad_id: int | None = PAD_ID
  eos_id: int = EOS_ID

  def __post_init__(self):
    check_options(self)  # A config mistake fails at construction.
    super().__post_init__()

  def setup(self):
    dtype = jnp.dtype(self.dtype)
    self.embed = Embed(self.vocab_size, self.d_model, dtype)
    self.positions = PositionEmbed(self.max_len, self.position_embedding)
    self.dropout = nn.Dropout(self.dropout_rate)
    self.decoder = TransformerStack(
        self.num_layers, self.num_heads, self.mlp_dim, self.dropout_rate,
        causal=True, attention_impl=self.attention_impl, remat=self.remat,
        decode=self.decode, dtype=dtype, gelu=self.gelu,
        layer_norm_epsilon=self.layer_norm_epsilon)
    if self.decode:
      self.next_position = self.variable('cache', 'next_position',
                                         lambda: jnp.array(0, jnp.int32))

  def __call__(self, tokens_BxL: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    offset = 0
    if self.decode and not self.is_initializing():
      offset = self.next_position.value
      self.next_position.value = offset + tokens_BxL.shape[1]
    x_BxLxD = self.positions(self.embed(tokens_BxL), offset)
    return self.from_embeddings(x_BxLxD, train=train)

  def from_embeddings(self, x_BxLxD: jnp.ndarray, *,
                      train: bool = False) -> jnp.ndarray:
    """Embedded tokens (positions added) [B, L, D] -> logits [B, L, vocab]."""
    x_BxLxD = self.dropout(x_BxLxD, deterministic=not train)
    x_BxLxD = self.decoder(x_BxLxD, None, train)
    return self.embed.attend(x_BxLxD).astype(jnp.float32)
