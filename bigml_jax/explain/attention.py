"""Attention maps of any model, and attention rollout over its layers.

Every attention module (`models.attention.MultiHeadAttention`,
`models.conv_attention.ConvAttention`) sows its softmax weights into the
'intermediates' collection when the model is applied with that collection
mutable; `attention_maps` collects them in layer order.
"""

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.models.attention import ATTENTION_WEIGHTS

# The registry's models that have attention (tests check the list against
# every model in `models.MODELS`).
ATTENTION_MODELS = ('bert', 'bert_mlm', 'conv_attention_cnn', 'gpt', 'vit')


def _natural_key(path: str) -> list[Any]:
  """'encoder/block_10/attention' sorts after '.../block_9/...'."""
  return [int(p) if p.isdigit() else p for p in re.split(r'(\d+)', path)]


def _sown(tree: Mapping[str, Any], prefix: str = '') -> dict[str, jax.Array]:
  found = {}
  for name, value in tree.items():
    if name == ATTENTION_WEIGHTS:
      found[prefix.rstrip('/')] = value[-1]  # sow keeps a tuple of calls.
    elif isinstance(value, Mapping):
      found.update(_sown(value, f'{prefix}{name}/'))
  return found


def _sown_in_order(state) -> dict[str, jax.Array]:
  sown = _sown(state.get('intermediates', {}))
  return {k: sown[k] for k in sorted(sown, key=_natural_key)}


def attention_maps(model: nn.Module, params: Any, inputs: jax.Array,
                   **apply_kwargs) -> tuple[jax.Array, list[jax.Array]]:
  """(outputs, [weights [B, H, L, S] of each attention module]), in layer
  order (`attention_layer_names`).

  The model runs once, in eval mode, with the 'intermediates' collection
  mutable; its outputs are those of a plain apply. The list is empty for a
  model without attention. (A list, not a dict: jit returns a dict's keys
  sorted, which puts block_10 before block_2.)
  """
  outputs, state = model.apply({'params': params}, inputs, train=False,
                               mutable=['intermediates'], **apply_kwargs)
  return outputs, list(_sown_in_order(state).values())


def attention_layer_names(model: nn.Module, params: Any, inputs: jax.Array,
                          **apply_kwargs) -> list[str]:
  """The attention modules' paths (e.g. 'encoder/block_0/attention') in the
  order of `attention_maps`; traced only, nothing is computed."""
  _, state = jax.eval_shape(
      lambda p, x: model.apply({'params': p}, x, train=False,
                               mutable=['intermediates'], **apply_kwargs),
      params, inputs)
  return list(_sown_in_order(state))


def attention_rollout(weights: list[jax.Array], *, residual: float = 0.5,
                      head_fusion: str = 'mean') -> jax.Array:
  """Attention rollout (Abnar & Zuidema 2020, eq. 1): [B, L, L].

  Per layer the heads' weights [B, H, L, L] are fused ('mean' or 'max'),
  the residual connection is added as `residual` * I (rows renormalised to
  sum to 1), and the layers are multiplied, the last on the left: row i is
  how much of output position i flows from each input position.
  """
  if not weights:
    raise ValueError('attention_rollout needs at least one layer of weights')
  fuse = {'mean': jnp.mean, 'max': jnp.max}[head_fusion]
  rollout = None
  for weights_BxHxLxL in weights:
    a_BxLxL = fuse(weights_BxHxLxL.astype(jnp.float32), axis=1)
    eye = jnp.eye(a_BxLxL.shape[-1], dtype=jnp.float32)
    a_BxLxL = residual * eye + (1 - residual) * a_BxLxL
    a_BxLxL = a_BxLxL / a_BxLxL.sum(axis=-1, keepdims=True)
    rollout = a_BxLxL if rollout is None else jnp.einsum(
        'bij,bjk->bik', a_BxLxL, rollout)
  return rollout


def pooled_relevance(rollout_BxLxL: jax.Array,
                     query_weights_BxL: jax.Array) -> jax.Array:
  """[B, L]: the rollout's rows averaged with `query_weights_BxL` (the
  positions the model's output reads: one-hot on [CLS] for 'cls' pooling,
  the real tokens for mean pooling); sums to 1 per example."""
  w_BxL = query_weights_BxL.astype(jnp.float32)
  w_BxL = w_BxL / w_BxL.sum(axis=-1, keepdims=True)
  return jnp.einsum('bl,bls->bs', w_BxL, rollout_BxLxL)
