"""Token models attributed at their embeddings."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigml_jax import ConfigError, build_model
from bigml_jax.explain import attributions as attr
from bigml_jax.explain import tokens as tokens_lib

BERT = {'name': 'bert', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
        'mlp_dim': 32, 'max_len': 12, 'dropout_rate': 0.0}


def _tokens():
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, 30, (4, 12)).astype(np.int32)
  tokens[0, 7:] = 0  # Padding.
  tokens[2, 3:] = 0
  return tokens


@pytest.fixture(scope='module')
def bert():
  model = build_model(BERT, vocab_size=30, num_classes=3)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0, impl='rbg'),
                                        _tokens())['params'])
  return model, params


def test_replaced_embeddings_give_the_models_own_output(bert):
  model, params = bert
  tokens = _tokens()
  apply_fn = tokens_lib.embedding_apply_fn(model, tokens)

  @jax.jit
  def run(params):
    embeddings = tokens_lib.token_embeddings(model, params, tokens)
    # k points per example, consecutive: each example's tokens repeated.
    return (embeddings, apply_fn(params, embeddings),
            model.apply({'params': params}, tokens),
            apply_fn(params, jnp.repeat(embeddings, 3, axis=0)))

  embeddings, replaced, plain, repeated = run(params)
  np.testing.assert_array_equal(
      embeddings, params['embed']['embedding'][tokens])
  np.testing.assert_array_equal(replaced, plain)
  np.testing.assert_allclose(repeated, jnp.repeat(plain, 3, axis=0),
                             rtol=1e-6)


def test_integrated_gradients_per_token_complete_and_zero_on_padding(bert):
  """Summed per token, IG at the embedding splits f(x) - f(zero vectors)
  over the tokens (within 1% of the batch's gaps at 128 steps: LayerNorm
  bends the path near the zero baseline more than the CNN's); padding,
  masked out of attention and pooling, gets 0."""
  model, params = bert
  tokens = _tokens()
  apply_fn = tokens_lib.embedding_apply_fn(model, tokens)
  target = jnp.array([0, 1, 2, 0])

  @jax.jit
  def run(params):
    embeddings = tokens_lib.token_embeddings(model, params, tokens)
    per_token = tokens_lib.per_token(attr.integrated_gradients(
        apply_fn, params, embeddings, target, steps=128))
    gap = (attr.target_logits(apply_fn, params, embeddings, target) -
           attr.target_logits(apply_fn, params, jnp.zeros_like(embeddings),
                              target))
    return per_token, gap

  per_token, gap = run(params)
  assert per_token.shape == (4, 12)
  error = np.abs(per_token.sum(-1) - gap)
  assert error.sum() < 0.01 * np.abs(gap).sum(), (error, gap)
  np.testing.assert_array_equal(per_token[0, 7:], 0.0)
  np.testing.assert_array_equal(per_token[2, 3:], 0.0)
  assert np.abs(per_token[1]).min() > 0  # Every real token counts.


def test_a_model_without_a_token_embedding_is_refused():
  model = build_model({'name': 'mlp', 'features': (4,)}, num_classes=3)
  x = jnp.ones((2, 5))
  params = nn.unbox(model.init(jax.random.key(0), x)['params'])
  with pytest.raises(ConfigError, match='looks up token embeddings 0 times'):
    tokens_lib.token_embeddings(model, params, x)
  apply_fn = tokens_lib.embedding_apply_fn(model, x)
  with pytest.raises(ConfigError, match='exactly one token-embedding'):
    functools.partial(attr.saliency, apply_fn)(params, jnp.ones((2, 5, 4)),
                                               jnp.zeros(2, jnp.int32))
