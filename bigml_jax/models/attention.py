"""Multi-head scaled dot-product attention with padding and causal masks.

Masks are boolean and broadcast to [B, H, L, S] (True = may attend): build
them with `padding_mask`, `causal_mask` and `combine_masks`.

Applied with `mutable=['intermediates']`, every attention module sows its
weights [B, H, L, S] under the name `ATTENTION_WEIGHTS` (see
`bigml_jax.explain.attention`); otherwise nothing is stored or computed.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.errors import ConfigError

IMPLEMENTATIONS = ('einsum', 'xla', 'cudnn')
# Name of the sown weights in the 'intermediates' collection.
ATTENTION_WEIGHTS = 'attention_weights'


def padding_mask(valid_BxS: jnp.ndarray) -> jnp.ndarray:
  """[B, S] bool (True = real token) -> [B, 1, 1, S]: pad keys are hidden."""
  return valid_BxS.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, kv_len: int | None = None) -> jnp.ndarray:
  """[1, 1, L, S] bool: query i attends to keys j <= i."""
  kv_len = q_len if kv_len is None else kv_len
  return jnp.tril(jnp.ones((q_len, kv_len), bool))[None, None]


def combine_masks(*masks: jnp.ndarray | None) -> jnp.ndarray | None:
  """Logical AND of the masks that are not None (None if all are)."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


def attention_weights(q_BxLxHxK: jnp.ndarray, k_BxSxHxK: jnp.ndarray,
                      mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """softmax(Q K^T / sqrt(d_k)) per head: -> [B, H, L, S], rows sum to 1.

  Masked logits become the dtype's most negative number rather than -inf, so a
  row with every key masked is uniform instead of NaN (as in flax). The
  softmax runs in float32 whatever the compute dtype.
  """
  depth = q_BxLxHxK.shape[-1]
  q_BxLxHxK = q_BxLxHxK / jnp.sqrt(depth).astype(q_BxLxHxK.dtype)
  logits_BxHxLxS = jnp.einsum('blhk,bshk->bhls', q_BxLxHxK, k_BxSxHxK)
  if mask is not None:
    big_neg = jnp.finfo(logits_BxHxLxS.dtype).min
    logits_BxHxLxS = jnp.where(mask, logits_BxHxLxS, big_neg)
  weights = jax.nn.softmax(logits_BxHxLxS.astype(jnp.float32), axis=-1)
  return weights.astype(q_BxLxHxK.dtype)


def _dense_general(features, axes, *, axis=-1, dtype, name):
  """DenseGeneral whose kernel has logical names `axes` (in dims, out dims)."""
  out_axes = axes[-len(features):] if isinstance(features, tuple) else axes[-1:]
  return nn.DenseGeneral(
      features, axis=axis, dtype=dtype, name=name,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), axes),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), tuple(out_axes)))


class MultiHeadAttention(nn.Module):
  """Multi-head attention: softmax(Q K^T / sqrt(d_k)) V over H heads.

  Q = x Wq, K = c Wk, V = c Wv (c = `context`, default x), each split into H
  heads of d_k = qkv_features / H; the heads' outputs are concatenated and
  projected by Wo. Parameters are named like
  `flax.linen.MultiHeadDotProductAttention` ('query', 'key', 'value' kernels
  [D, H, d_k]; 'out' kernel [H, d_k, D_out]), so weights copy across and the
  outputs agree.

  Inputs: x [B, L, D], context [B, S, D] or None, mask bool broadcastable to
  [B, H, L, S] (True = may attend), causal adds `causal_mask`. Output
  [B, L, out_features or D].

  Attributes:
    num_heads: H.
    qkv_features: total width of Q, K, V over all heads (default D).
    out_features: output width (default D).
    dropout_rate: dropout on the attention weights (training only).
    decode: autoregressive decoding with a key/value cache (the 'cache'
      collection, sized by the [B, S_max, D] input that `init` sees): each
      call appends its L positions' keys and values, and its queries attend
      to every position filled so far, their own included (causal). Apply
      with `mutable=['cache']`; `sampling.generate` does. Calls past S_max
      positions overwrite the last ones (XLA clamps the write): size the
      cache for the whole sequence.
    implementation: 'einsum' (the reference above), 'xla' or 'cudnn'
      (`jax.nn.dot_product_attention`; 'cudnn' is the fused flash kernel on
      NVIDIA GPUs in bf16/fp16). The fused paths have no attention dropout, so
      a training call with dropout_rate > 0 uses 'einsum'. Either way, applied
      with `mutable=['intermediates']` the module sows the softmax weights
      [B, H, L, S] (before dropout) as `ATTENTION_WEIGHTS`; the fused paths
      then compute them once more beside the kernel.
    dtype: compute dtype; parameters stay float32.
  """
  num_heads: int
  qkv_features: int | None = None
  out_features: int | None = None
  dropout_rate: float = 0.0
  implementation: str = 'einsum'
  decode: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray,
               context_BxSxD: jnp.ndarray | None = None, *,
               mask: jnp.ndarray | None = None, causal: bool = False,
               train: bool = False) -> jnp.ndarray:
    if self.implementation not in IMPLEMENTATIONS:
      raise ConfigError(f'attention implementation {self.implementation!r} is '
                        f'unknown; use one of {", ".join(IMPLEMENTATIONS)}')
    context_BxSxD = x_BxLxD if context_BxSxD is None else context_BxSxD
    features = self.qkv_features or x_BxLxD.shape[-1]
    if features % self.num_heads:
      raise ConfigError(f'qkv_features {features} is not divisible by '
                        f'num_heads {self.num_heads}')
    head_shape = (self.num_heads, features // self.num_heads)
    project = lambda name: _dense_general(
        head_shape, ('embed', 'heads', 'kv'), dtype=self.dtype, name=name)
    q_BxLxHxK = project('query')(x_BxLxD)
    k_BxSxHxK = project('key')(context_BxSxD)
    v_BxSxHxK = project('value')(context_BxSxD)
    if self.decode:
      k_BxSxHxK, v_BxSxHxK, seen = self._extend_cache(k_BxSxHxK, v_BxSxHxK)
      if seen is not None:  # Not init, which only sizes the cache.
        mask, causal = combine_masks(mask, seen), False
    out_BxLxHxK = self.attend(q_BxLxHxK, k_BxSxHxK, v_BxSxHxK, mask=mask,
                              causal=causal, train=train)
    out_features = self.out_features or x_BxLxD.shape[-1]
    return _dense_general(out_features, ('heads', 'kv', 'embed'), axis=(-2, -1),
                          dtype=self.dtype, name='out')(out_BxLxHxK)

  def _extend_cache(self, k_BxLxHxK: jnp.ndarray, v_BxLxHxK: jnp.ndarray):
    """(all cached keys [B, S, H, K], values, mask [1, 1, L, S] of what each
    new query may see), after appending this call's L positions; at init,
    the inputs as they are and no mask."""
    initializing = self.is_initializing()
    if not initializing and not self.has_variable('cache', 'cached_key'):
      # It would be sized by this call's L positions, and be wrong after.
      raise ConfigError('decode=True needs its cache: init it with the whole '
                        'length, model.init(rng, tokens [B, max_len]), and '
                        "apply with {'params': ..., 'cache': ...}")
    keys = self.variable('cache', 'cached_key', jnp.zeros,
                         k_BxLxHxK.shape, k_BxLxHxK.dtype)
    values = self.variable('cache', 'cached_value', jnp.zeros,
                           v_BxLxHxK.shape, v_BxLxHxK.dtype)
    index = self.variable('cache', 'cache_index',
                          lambda: jnp.array(0, jnp.int32))
    if initializing:
      return k_BxLxHxK, v_BxLxHxK, None
    length, start = k_BxLxHxK.shape[1], index.value
    keys.value = jax.lax.dynamic_update_slice_in_dim(
        keys.value, k_BxLxHxK.astype(keys.value.dtype), start, axis=1)
    values.value = jax.lax.dynamic_update_slice_in_dim(
        values.value, v_BxLxHxK.astype(values.value.dtype), start, axis=1)
    index.value = start + length
    # New query i sits at position start + i and sees keys j <= that.
    seen_LxS = (jnp.arange(keys.value.shape[1])[None, :] <=
                start + jnp.arange(length)[:, None])
    return keys.value, values.value, seen_LxS[None, None]

  def attend(self, q_BxLxHxK: jnp.ndarray, k_BxSxHxK: jnp.ndarray,
             v_BxSxHxK: jnp.ndarray, *, mask: jnp.ndarray | None,
             causal: bool, train: bool) -> jnp.ndarray:
    """softmax(QK^T / sqrt(d_k)) V per head, by `implementation`; call from
    a compact method (attention dropout is a submodule)."""
    if self.implementation == 'einsum' or (train and self.dropout_rate > 0):
      if causal:
        mask = combine_masks(mask, causal_mask(q_BxLxHxK.shape[1],
                                               k_BxSxHxK.shape[1]))
      att_BxHxLxS = attention_weights(q_BxLxHxK, k_BxSxHxK, mask)
      self.sow('intermediates', ATTENTION_WEIGHTS, att_BxHxLxS)
      att_BxHxLxS = nn.Dropout(self.dropout_rate, deterministic=not train)(
          att_BxHxLxS)
      return jnp.einsum('bhls,bshk->blhk', att_BxHxLxS, v_BxSxHxK)
    if self.is_mutable_collection('intermediates'):
      # The fused kernels never materialise the weights: only when asked,
      # and beside the kernel, whose call stays as it is.
      seen = (causal_mask(q_BxLxHxK.shape[1], k_BxSxHxK.shape[1])
              if causal else None)
      self.sow('intermediates', ATTENTION_WEIGHTS, attention_weights(
          q_BxLxHxK, k_BxSxHxK, combine_masks(mask, seen)))
    return jax.nn.dot_product_attention(
        q_BxLxHxK, k_BxSxHxK, v_BxSxHxK,
        mask=None if mask is None else jnp.asarray(mask, bool),
        is_causal=causal, implementation=self.implementation)
