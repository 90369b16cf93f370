"""Generation as one exportable function: prefill, then cached decode steps.

`make_generate` differs from `sampling.generate` in what a server needs:
every sampling option is an array with one value per row (temperature,
top-k, top-p, seed, how many tokens), so requests with different options
share one compiled batch, and prompts of different lengths share it too:
the tokens every prompt has (the shortest prompt's length Q) are prefilled
in one call, and each row's remaining prompt tokens are fed through the
decode steps as they are instead of being drawn. A row's draws depend on
its own seed only, never on the rows beside it. For one row, or rows with
prompts of one length, the model calls are exactly those of
`sampling.generate` (tested equal, greedy and sampled).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.errors import ConfigError


def sample_row(logits_V: jax.Array, key: jax.Array, temperature: jax.Array,
               top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """One token id from logits [V], with the options as traced scalars.

  `sampling.sample_logits` for one row: argmax at temperature 0, else a draw
  from softmax(logits / temperature) restricted to the top_k largest (0 =
  all), then to the nucleus of probability top_p (1 = all). For logits
  [1, V] and the same key it draws the same token.
  """
  vocab = logits_V.shape[-1]
  greedy = logits_V.argmax(-1).astype(jnp.int32)
  scaled_V = logits_V.astype(jnp.float32) / jnp.where(temperature > 0,
                                                      temperature, 1.0)
  sorted_V = jnp.flip(jnp.sort(scaled_V))
  kth = sorted_V[jnp.clip(top_k - 1, 0, vocab - 1)]
  cut_k = (top_k > 0) & (top_k < vocab)
  scaled_V = jnp.where(cut_k & (scaled_V < kth), -jnp.inf, scaled_V)
  sorted_V = jnp.flip(jnp.sort(scaled_V))
  probs_V = jax.nn.softmax(sorted_V)
  # A token is in if the likelier ones hold less than top_p together.
  inside_V = jnp.cumsum(probs_V) - probs_V < top_p
  last = jnp.min(jnp.where(inside_V, sorted_V, jnp.inf))
  scaled_V = jnp.where((top_p < 1) & (scaled_V < last), -jnp.inf, scaled_V)
  drawn = jax.random.categorical(key, scaled_V).astype(jnp.int32)
  return jnp.where(temperature == 0, greedy, drawn)


def _empty_cache(decoder: nn.Module, batch: Any, max_len: int) -> Any:
  shapes = jax.eval_shape(decoder.init, jax.random.key(0),
                          jnp.zeros((batch, max_len), jnp.int32))
  if 'cache' not in shapes:
    raise ConfigError(f'{type(decoder).__name__}(decode=True) made no '
                      "'cache' collection; generation cannot be exported")
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])


def make_generate(model: nn.Module, *, max_new_tokens: int, stop_id: int,
                  pad_id: int = 0) -> Callable[..., jax.Array]:
  """Returns generate(params, prefix_BxQ, rest_BxR, rest_len_B, num_new_B,
  seed_B, temperature_B, top_k_B, top_p_B) -> new tokens int32 [B, N].

  Args:
    model: a causal LM with a `decode` field and a 'cache' collection
      (`GPTLM`), applied as `model.apply({'params': p}, tokens [B, L])`.
    max_new_tokens: N, the most tokens a row may ask for.
    stop_id: the token that ends a continuation (EOS); it and what follows
      become `pad_id`.
    pad_id: what fills a row past its end.

  The function's arguments: prompt row b is prefix_BxQ[b] (Q >= 1 tokens
  every row has, prefilled at once) followed by rest_BxR[b, :rest_len_B[b]];
  num_new_B[b] <= N tokens are added after it, drawn with seed_B[b] (uint32)
  and that row's temperature, top_k and top_p (`sample_row`). Each row's
  prompt and new tokens must fit the model's max_len; rest_BxR may have
  a column of padding more (Q + R + N <= max_len + 1: the last column is
  drawn, never fed). The decode loop stops once every row is done.
  """
  if max_new_tokens < 1:
    raise ConfigError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  decoder = model.clone(decode=True)
  draw = jax.vmap(sample_row)

  def generate(params, prefix_BxQ, rest_BxR, rest_len_B, num_new_B, seed_B,
               temperature_B, top_k_B, top_p_B):
    batch, prefill = prefix_BxQ.shape
    total = prefill + rest_BxR.shape[1] + max_new_tokens
    tokens_BxT = jnp.concatenate(
        [prefix_BxQ, rest_BxR,
         jnp.full((batch, max_new_tokens), pad_id, jnp.int32)], axis=1)
    start_B = prefill + rest_len_B  # Where each row's new tokens begin.
    end_B = start_B + num_new_B
    keys_B = jax.vmap(jax.random.key)(seed_B)
    cache = _empty_cache(decoder, batch, model.max_len)

    def put(t, logits_BxV, tokens_BxT, done_B):
      """Sets column t: the prompt's token, a draw, or pad once done."""
      t = jnp.asarray(t, jnp.int32)  # Also a symbolic dimension (Q).
      drawn_B = draw(logits_BxV, jax.vmap(jax.random.fold_in, (0, None))(
          keys_B, t), temperature_B, top_k_B, top_p_B)
      forced_B = t < start_B
      token_B = jnp.where(forced_B, tokens_BxT[:, t],
                          jnp.where(done_B, pad_id, drawn_B))
      done_B = done_B | (~forced_B & (token_B == stop_id)) | (t + 1 >= end_B)
      return tokens_BxT.at[:, t].set(token_B), done_B

    logits_BxQxV, updates = decoder.apply(
        {'params': params, 'cache': cache}, prefix_BxQ, mutable=['cache'])
    tokens_BxT, done_B = put(prefill, logits_BxQxV[:, -1], tokens_BxT,
                             jnp.zeros((batch,), bool))
    stop_at = jnp.minimum(jnp.max(end_B), total)

    def more(carry):
      t, _, _, done_B = carry
      return (t < stop_at) & ~jnp.all(done_B)

    def feed_token(carry):
      """Feeds token t - 1, sets token t."""
      t, tokens_BxT, cache, done_B = carry
      logits_Bx1xV, updates = decoder.apply(
          {'params': params, 'cache': cache},
          jax.lax.dynamic_slice_in_dim(tokens_BxT, t - 1, 1, axis=1),
          mutable=['cache'])
      tokens_BxT, done_B = put(t, logits_Bx1xV[:, 0], tokens_BxT, done_B)
      return t + 1, tokens_BxT, updates['cache'], done_B

    _, tokens_BxT, _, _ = jax.lax.while_loop(
        more, feed_token,
        (jnp.asarray(prefill + 1, jnp.int32), tokens_BxT, updates['cache'],
         done_B))
    index_BxN = start_B[:, None] + jnp.arange(max_new_tokens)[None]
    new_BxN = jnp.take_along_axis(tokens_BxT, index_BxN, axis=1)
    stopped_BxN = jnp.cumsum(new_BxN == stop_id, axis=1) > 0
    unasked_BxN = jnp.arange(max_new_tokens)[None] >= num_new_B[:, None]
    return jnp.where(stopped_BxN | unasked_BxN, pad_id, new_BxN)

  return generate
