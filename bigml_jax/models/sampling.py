"""Sampling from causal LMs: temperature, top-k and top-p, in one loop.

A model with a `decode` field (`GPTLM`) runs with its key/value cache: the
prompt goes in one call (prefill), then each step feeds one token and
attends to the cached ones, so a token costs one position's work. Any other
causal model is run over the whole [B, P + N] buffer once per new token,
reading the logits at the last filled position (causality hides the
unfilled positions to the right).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.errors import ConfigError


def sample_logits(logits_BxV: jax.Array, rng: jax.Array, *,
                  temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Next token ids [B] from logits [B, V]: argmax at temperature 0, else a
  draw from softmax(logits / temperature), restricted to the top_k largest
  (0 = all) and then to the nucleus: the likeliest tokens whose
  probabilities first reach top_p (1 = all; Holtzman et al., 2020). Logits
  tied with the last one kept stay in."""
  if temperature == 0:
    return logits_BxV.argmax(-1).astype(jnp.int32)
  logits_BxV = logits_BxV.astype(jnp.float32) / temperature
  if 0 < top_k < logits_BxV.shape[-1]:
    kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if top_p < 1:
    sorted_BxV = jnp.flip(jnp.sort(logits_BxV, axis=-1), axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    # A token is in if the likelier ones hold less than top_p together.
    inside_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < top_p
    last_Bx1 = jnp.min(jnp.where(inside_BxV, sorted_BxV, jnp.inf), axis=-1,
                       keepdims=True)
    logits_BxV = jnp.where(logits_BxV < last_Bx1, -jnp.inf, logits_BxV)
  return jax.random.categorical(rng, logits_BxV).astype(jnp.int32)


def generate(model: nn.Module, params: Any, prompt_BxP: jax.Array,
             rng: jax.Array, *, num_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, stop_id: int | None = None,
             pad_id: int = 0) -> jax.Array:
  """Extends each prompt by `num_tokens` sampled tokens.

  Args:
    model: a causal LM, `model.apply({'params': params}, tokens [B, L])`
      -> logits [B, L, vocab], whose logits at t read tokens <= t only
      (e.g. `GPTLM`); P + num_tokens must fit its `max_len`, if it has one.
    params: the model's params.
    prompt_BxP: int token ids [B, P], P >= 1 (e.g. EOS to start a document).
    rng: PRNG key; unused at temperature 0.
    num_tokens: how many tokens to add.
    temperature, top_k, top_p: see `sample_logits`.
    stop_id: a token that ends a continuation (e.g. EOS): it and everything
      sampled after it become `pad_id`.

  Every argument but params, prompt_BxP and rng must be a Python value:
  under `jax.jit` make them static (e.g. `jax.jit(functools.partial(
  generate, model, num_tokens=64))`), which also keeps repeated calls from
  compiling again.

  Returns:
    int32 [B, P + num_tokens]: the prompts followed by their continuations.
  """
  if (jnp.ndim(prompt_BxP) != 2 or num_tokens < 0 or temperature < 0 or
      top_k < 0 or not 0 < top_p <= 1):
    raise ConfigError(
        'generate needs prompt [B, P], num_tokens, temperature and top_k >= 0 '
        f'and top_p in (0, 1] (got a prompt of shape {jnp.shape(prompt_BxP)}, '
        f'{num_tokens}, {temperature}, {top_k}, {top_p})')
  batch, prompt_len = prompt_BxP.shape
  total = prompt_len + num_tokens
  max_len = getattr(model, 'max_len', None)
  if prompt_len < 1:
    raise ConfigError('generate needs a prompt of at least one token, e.g. '
                      'EOS to start a document')
  if max_len is not None and total > max_len:
    raise ConfigError(f'a prompt of {prompt_len} tokens plus {num_tokens} new '
                      f'ones exceeds the model\'s max_len {max_len}; sample '
                      'fewer tokens')
  tokens_BxT = jnp.zeros((batch, total), jnp.int32).at[:, :prompt_len].set(
      prompt_BxP.astype(jnp.int32))

  draw = lambda logits_BxV, t: sample_logits(
      logits_BxV, jax.random.fold_in(rng, t), temperature=temperature,
      top_k=top_k, top_p=top_p)

  # A flax-style `decode` attribute (a field, not a method) turns a cache on.
  if 'decode' in getattr(model, '__dataclass_fields__', {}) and num_tokens:
    decoder = model.clone(decode=True)
    shapes = jax.eval_shape(decoder.init, jax.random.key(0), tokens_BxT)
    if 'cache' not in shapes:
      raise ConfigError(f'{type(model).__name__}(decode=True) made no '
                        "'cache' collection; give it one or drop its decode "
                        'attribute')
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         shapes['cache'])
    # Prefill: the whole prompt in one call, then one position a step.
    logits_BxPxV, updates = decoder.apply(
        {'params': params, 'cache': cache}, tokens_BxT[:, :prompt_len],
        mutable=['cache'])
    tokens_BxT = tokens_BxT.at[:, prompt_len].set(
        draw(logits_BxPxV[:, -1], prompt_len))

    def feed_token(t, carry):
      """Feeds token t - 1 and draws token t."""
      tokens_BxT, cache = carry
      logits_Bx1xV, updates = decoder.apply(
          {'params': params, 'cache': cache},
          jax.lax.dynamic_slice_in_dim(tokens_BxT, t - 1, 1, axis=1),
          mutable=['cache'])
      return (tokens_BxT.at[:, t].set(draw(logits_Bx1xV[:, 0], t)),
              updates['cache'])

    tokens_BxT, _ = jax.lax.fori_loop(prompt_len + 1, total, feed_token,
                                      (tokens_BxT, updates['cache']))
  else:

    def add_token(t, tokens_BxT):
      logits_BxTxV = model.apply({'params': params}, tokens_BxT)
      return tokens_BxT.at[:, t].set(draw(logits_BxTxV[:, t - 1], t))

    tokens_BxT = jax.lax.fori_loop(prompt_len, total, add_token, tokens_BxT)
  if stop_id is None:
    return tokens_BxT
  new_BxN = tokens_BxT[:, prompt_len:]
  stopped_BxN = jnp.cumsum(new_BxN == stop_id, axis=1) > 0
  return tokens_BxT.at[:, prompt_len:].set(
      jnp.where(stopped_BxN, pad_id, new_BxN))
