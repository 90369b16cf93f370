"""Token models attributed at their embeddings.

Token ids are not differentiable, so the attribution methods see a text
model as a function of the vectors its embedding table looks up: the
model's one token-embedding call (`models.embeddings.Embed` or flax's
`nn.Embed`) is intercepted and returns the given vectors [B, L, D] instead,
while everything else (the padding mask, positions) still comes from the
token ids. No model needs a code path of its own for this.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.errors import ConfigError
from bigml_jax.models.embeddings import Embed


def _is_token_lookup(context) -> bool:
  return (context.method_name == '__call__' and
          isinstance(context.module, (Embed, nn.Embed)))


def _one_lookup(model: nn.Module, calls: int) -> None:
  if calls != 1:
    raise ConfigError(
        f'{type(model).__name__} looks up token embeddings {calls} times per '
        'call; attributions at the embedding need a model with exactly one '
        'token-embedding table call (e.g. bert, gpt, rnn_classifier)')


def token_embeddings(model: nn.Module, params: Any,
                     tokens_BxL: jax.Array) -> jax.Array:
  """The vectors [B, L, D] the model looks up for `tokens_BxL`."""
  found = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_token_lookup(context):
      found.append(out)
    return out

  with nn.intercept_methods(record):
    model.apply({'params': params}, tokens_BxL, train=False)
  _one_lookup(model, len(found))
  return found[0]


def embedding_apply_fn(model: nn.Module, tokens_BxL: jax.Array
                       ) -> Callable[[Any, jax.Array], jax.Array]:
  """apply_fn(params, embeddings [B, L, D]) -> the model's output on
  `tokens_BxL` with their looked-up vectors replaced by `embeddings`.

  With `token_embeddings(model, params, tokens_BxL)` as inputs it gives the
  model's own output; the attribution methods differentiate it. Embeddings
  [B * k, L, D] (k points per example, consecutive, as the methods pass
  them) are read with each example's tokens repeated k times.
  """

  def apply_fn(params, embeddings_BxLxD):
    tokens = tokens_BxL
    if embeddings_BxLxD.shape[0] != tokens.shape[0]:
      tokens = jnp.repeat(tokens, embeddings_BxLxD.shape[0] // tokens.shape[0],
                          axis=0)
    calls = []

    def replace(next_fun, args, kwargs, context):
      if not _is_token_lookup(context):
        return next_fun(*args, **kwargs)
      calls.append(context.module)
      dtype = getattr(context.module, 'dtype', None) or jnp.float32
      return embeddings_BxLxD.astype(dtype)

    with nn.intercept_methods(replace):
      out = model.apply({'params': params}, tokens, train=False)
    _one_lookup(model, len(calls))
    return out

  return apply_fn


def per_token(attributions_BxLxD: jax.Array) -> jax.Array:
  """Attributions at the embedding [B, L, D] -> one number per token [B, L]
  (their sum: for gradient x input and integrated gradients, each token's
  share of the logit)."""
  return attributions_BxLxD.sum(axis=-1)
