"""Token embeddings, the normalised weighted-sum composition, positions."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError
from bigml_jax.models import embeddings
from bigml_jax.models.embeddings import ComposedEmbed, Embed, PositionEmbed

TOKENS = np.array([[3, 1, 4, 0], [5, 0, 0, 0]], np.int32)  # 0 = padding


def _init(model, x):
  """Jitted init; an 'rbg' key compiles several times faster than threefry
  on CPU, and these tests need parameters, not a particular stream."""
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda x: nn.unbox(model.init(key, x).get('params', {})))(x)


class EmbedTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_lookup_and_attend(self, dtype):
    model = Embed(vocab_size=7, features=4, dtype=dtype)
    params = _init(model, TOKENS)
    table = np.asarray(params['embedding'])
    lookup = self.variant(lambda t: model.apply({'params': params}, t))
    vectors = lookup(TOKENS)
    chex.assert_shape(vectors, (2, 4, 4))
    chex.assert_type(vectors, dtype)
    np.testing.assert_allclose(np.asarray(vectors, np.float32),
                               table[TOKENS].astype(dtype), rtol=1e-2)
    attend = self.variant(lambda x: model.apply({'params': params}, x,
                                                method=Embed.attend))
    logits = attend(vectors)
    chex.assert_shape(logits, (2, 4, 7))
    tol = 1e-5 if dtype == jnp.float32 else 5e-2
    np.testing.assert_allclose(np.asarray(logits, np.float32),
                               np.asarray(vectors, np.float32) @ table.T,
                               rtol=tol, atol=tol)


def test_embed_table_names_and_float32_params():
  model = Embed(vocab_size=7, features=4, dtype=jnp.bfloat16)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), TOKENS))
  assert tuple(nn.get_partition_spec(boxed)['params']['embedding']) == (
      'vocab', 'embed')
  assert nn.unbox(boxed)['params']['embedding'].dtype == jnp.float32


def test_normalized_weighted_sum_formula():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(2, 3, 4)).astype(np.float32)
  a = np.array([[0.5, 2.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
  unnormalized = np.einsum('bn,bnd->bd', a, v)  # v_w = sum_n a_n v_{w_n}
  expected = unnormalized / np.linalg.norm(unnormalized, axis=-1, keepdims=True)
  e = embeddings.normalized_weighted_sum(v, a)
  np.testing.assert_allclose(e, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)
  # A zero weight drops a position; scaling all weights changes nothing.
  np.testing.assert_allclose(
      embeddings.normalized_weighted_sum(v[:1, :2], a[:1, :2]), e[:1],
      rtol=1e-5)
  np.testing.assert_allclose(embeddings.normalized_weighted_sum(v, 3 * a), e,
                             rtol=1e-5)
  # An empty bag is the zero vector, not NaN.
  np.testing.assert_array_equal(
      embeddings.normalized_weighted_sum(v, np.zeros_like(a)), 0.0)


@pytest.mark.parametrize('weighting', ['uniform', 'learned'])
def test_composed_embed_is_normalized_sum_of_sub_token_vectors(weighting):
  model = ComposedEmbed(vocab_size=7, features=4, weighting=weighting)
  params = _init(model, TOKENS)
  table = np.asarray(params['embed']['embedding'])
  # Row 0 = sub-tokens 3, 1, 4 (then a pad); row 1 = the single sub-token 5.
  a = np.ones(7, np.float32)
  if weighting == 'learned':
    s = np.linspace(-1.0, 2.0, 7).astype(np.float32)
    params = {**params, 'token_weight': s}
    a = np.log1p(np.exp(s))  # softplus
  v0 = a[3] * table[3] + a[1] * table[1] + a[4] * table[4]
  expected = np.stack([v0 / np.linalg.norm(v0),
                       table[5] / np.linalg.norm(table[5])])
  out = jax.jit(lambda p, t: model.apply({'params': p}, t))(params, TOKENS)
  chex.assert_shape(out, (2, 4))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_learned_weights_start_uniform():
  learned = ComposedEmbed(vocab_size=7, features=4, weighting='learned')
  params = _init(learned, TOKENS)
  np.testing.assert_allclose(jax.nn.softplus(params['token_weight']), 1.0,
                             rtol=1e-6)
  assert tuple(nn.get_partition_spec(jax.eval_shape(
      lambda: learned.init(jax.random.key(0), TOKENS)))['params']
               ['token_weight']) == ('vocab',)


def test_sinusoidal_positions_values():
  table = embeddings.sinusoidal_positions(length=5, features=6)
  chex.assert_shape(table, (5, 6))
  np.testing.assert_allclose(table[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
  np.testing.assert_allclose(table[3, :2], [np.sin(3.0), np.cos(3.0)],
                             rtol=1e-6)
  np.testing.assert_allclose(table[2, 2], np.sin(2 / 10000 ** (2 / 6)),
                             rtol=1e-6)
  # Each sin/cos pair has unit norm, so every row has norm sqrt(D / 2).
  np.testing.assert_allclose(np.linalg.norm(table, axis=1), np.sqrt(3),
                             rtol=1e-6)
  chex.assert_shape(embeddings.sinusoidal_positions(5, 7), (5, 7))


@pytest.mark.parametrize('kind', ['learned', 'sinusoidal'])
def test_position_embed_adds_table(kind):
  model = PositionEmbed(max_len=8, kind=kind)
  x = np.zeros((2, 5, 6), np.float32)
  params = _init(model, x)
  out = model.apply({'params': params}, x)
  expected = (params['pos_embedding'][:5] if kind == 'learned' else
              embeddings.sinusoidal_positions(8, 6)[:5])
  np.testing.assert_allclose(out, np.broadcast_to(expected, (2, 5, 6)),
                             rtol=1e-6)
  assert (kind == 'sinusoidal') == (params == {})


def test_position_embed_errors():
  with pytest.raises(ConfigError, match='sequence length 9 exceeds max_len 8'):
    PositionEmbed(max_len=8).init(jax.random.key(0), np.zeros((1, 9, 4)))
  with pytest.raises(ConfigError, match="position embedding 'rope' is unknown"):
    PositionEmbed(max_len=8, kind='rope').init(jax.random.key(0),
                                               np.zeros((1, 2, 4)))
