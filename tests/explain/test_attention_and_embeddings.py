"""Attention maps in layer order, rollout, and the embedding table's
neighbours and projection."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigml_jax.explain import attention as att
from bigml_jax.explain import embeddings as emb
from bigml_jax.models import MODELS, build_model
from bigml_jax.models.attention import ATTENTION_WEIGHTS, MultiHeadAttention

IMAGES, TOKENS = np.ones((2, 8, 8, 1), np.float32), np.ones((2, 8), np.int32)
# Each registry model, tiny, with an input it reads (a new model needs a
# line here, and `explain.ATTENTION_MODELS` says whether it has attention).
TINY = {
    'mlp': ({'features': (4,), 'num_classes': 3}, IMAGES),
    'cnn': ({'channels': (2,), 'dense': (4,), 'num_classes': 3}, IMAGES),
    'rnn_classifier': ({'vocab_size': 10, 'num_classes': 3, 'embed_dim': 4,
                        'hidden_dim': 4}, TOKENS),
    'rnn_sequence': ({'num_classes': 3, 'hidden_dim': 4},
                     np.ones((2, 5, 3), np.float32)),
    'bert': ({'vocab_size': 10, 'num_classes': 3, 'num_layers': 1,
              'd_model': 8, 'num_heads': 2, 'mlp_dim': 8, 'max_len': 8},
             TOKENS),
    'bert_mlm': ({'vocab_size': 10, 'num_layers': 1, 'd_model': 8,
                  'num_heads': 2, 'mlp_dim': 8, 'max_len': 8}, TOKENS),
    'gpt': ({'vocab_size': 10, 'num_layers': 1, 'd_model': 8, 'num_heads': 2,
             'mlp_dim': 8, 'max_len': 8}, TOKENS),
    'vit': ({'num_classes': 3, 'patch_size': 4, 'd_model': 8,
             'num_layers': 1, 'num_heads': 2, 'mlp_dim': 8}, IMAGES),
    'conv_attention_cnn': ({'channels': (4,), 'dense': (4,),
                            'num_classes': 3}, IMAGES),
    'dcgan_generator': ({'output_shape': (8, 8, 1), 'latent_dim': 4,
                         'channels': (4, 2)}, np.ones((2, 4), np.float32)),
    'dcgan_discriminator': ({'channels': (2,)}, IMAGES),
    'mlp_generator': ({'output_shape': (2,), 'latent_dim': 4,
                       'features': (4,)}, np.ones((2, 4), np.float32)),
    'mlp_discriminator': ({'features': (4,)}, np.ones((2, 2), np.float32)),
    'bag_of_embeddings': ({'vocab_size': 10, 'num_classes': 3,
                           'features': 4}, TOKENS),
}


def test_attention_models_are_exactly_those_that_sow_weights():
  assert sorted(TINY) == sorted(MODELS), 'add the new model to TINY'
  sowing = []
  for name, (fields, x) in TINY.items():
    model = build_model({'name': name, **fields})
    _, maps = jax.eval_shape(
        lambda x, model=model: att.attention_maps(
            model, nn.unbox(model.init(jax.random.key(0), x)['params']), x),
        x)
    if maps:
      sowing.append(name)
  assert tuple(sorted(sowing)) == att.ATTENTION_MODELS


class _Ladder(nn.Module):
  """`layers` attention layers; layer i attends to the first i + 1
  positions, so its weights' shape [B, 1, L, i + 1] says which it is."""
  layers: int = 11

  @nn.compact
  def __call__(self, x_BxLxD, *, train=False):
    del train
    for i in range(self.layers):
      x_BxLxD = x_BxLxD + MultiHeadAttention(1, name=f'block_{i}')(
          x_BxLxD, x_BxLxD[:, :i + 1])
    return x_BxLxD


def test_attention_maps_come_in_layer_order():
  model, x = _Ladder(), jnp.ones((2, 11, 4))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert att.attention_layer_names(model, params, x) == [
      f'block_{i}' for i in range(11)]  # block_10 last, not after block_1.
  _, maps = jax.eval_shape(
      jax.jit(lambda p: att.attention_maps(model, p, x)), params)
  assert [w.shape for w in maps] == [(2, 1, 11, i + 1) for i in range(11)]


def test_attention_maps_are_the_sown_weights_and_outputs_the_plain_ones():
  model = _Ladder(layers=2)
  x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
  params = model.init(jax.random.key(0, impl='rbg'), x)['params']

  @jax.jit
  def run(p):
    return (att.attention_maps(model, p, x),
            model.apply({'params': p}, x, mutable=['intermediates']))

  (outputs, maps), (plain, state) = run(params)
  np.testing.assert_array_equal(outputs, plain)
  for i in range(2):
    assert maps[i].shape == (2, 1, 3, i + 1)
    np.testing.assert_array_equal(
        maps[i], state['intermediates'][f'block_{i}'][ATTENTION_WEIGHTS][0])


def test_rollout_is_the_product_of_residual_mixed_layers():
  rng = np.random.default_rng(0)
  layers = [jax.nn.softmax(rng.normal(size=(2, 3, 4, 4)), axis=-1)
            for _ in range(3)]
  expected = np.stack([np.eye(4)] * 2)
  for a in layers:
    mixed = 0.5 * np.eye(4) + 0.5 * np.asarray(a).mean(axis=1)
    expected = mixed @ expected
  rollout = att.attention_rollout(layers)
  np.testing.assert_allclose(rollout, expected, rtol=1e-5)
  np.testing.assert_allclose(rollout.sum(-1), 1.0, rtol=1e-5)
  # Attention that only looks at itself moves nothing: the identity.
  np.testing.assert_allclose(
      att.attention_rollout([jnp.broadcast_to(jnp.eye(4), (2, 3, 4, 4))] * 2),
      np.stack([np.eye(4)] * 2), atol=1e-7)
  relevance = att.pooled_relevance(rollout, np.array([[1, 1, 0, 0],
                                                      [1, 0, 0, 0]]))
  np.testing.assert_allclose(relevance[0], rollout[0, :2].mean(0), rtol=1e-6)
  np.testing.assert_allclose(relevance[1], rollout[1, 0], rtol=1e-6)
  with pytest.raises(ValueError, match='at least one layer'):
    att.attention_rollout([])


def _planted_table():
  """50 random unit-ish rows; rows 10, 11, 12 near one direction, and
  king = royal + man, queen = royal + woman."""
  rng = np.random.default_rng(0)
  table = rng.normal(size=(50, 32)).astype(np.float32)
  base = rng.normal(size=32)
  for i, row in enumerate((10, 11, 12)):
    table[row] = 3 * base + 0.1 * i * rng.normal(size=32)
  royal, man, woman = table[20], table[21], table[22]
  table[23], table[24] = royal + man, royal + woman  # king, queen
  return table


def test_nearest_neighbours_of_a_planted_table_are_the_planted_ones():
  table = _planted_table()
  exclude = np.zeros((2, 50), bool)
  exclude[0, 10] = True  # The query's own row.
  exclude[1, [21, 22, 23]] = True  # king - man + woman's own words.
  queries = np.stack([table[10], table[23] - table[21] + table[22]])
  ids, sims = jax.jit(lambda t, q, e: emb.nearest_neighbours(t, q, 3, e))(
      table, queries, exclude)
  assert sorted(np.asarray(ids[0, :2]).tolist()) == [11, 12]
  assert int(ids[1, 0]) == 24  # queen
  np.testing.assert_allclose(sims[1, 0], 1.0, rtol=1e-5)
  assert np.all(np.diff(np.asarray(sims), axis=1) <= 0)  # Best first.
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  np.testing.assert_allclose(sims[0], unit[np.asarray(ids[0])] @ unit[10],
                             rtol=1e-5)


def test_pca_of_points_on_a_plane_keeps_their_distances():
  rng = np.random.default_rng(0)
  plane = rng.normal(size=(20, 2)) * [5.0, 1.0]
  basis, _ = np.linalg.qr(rng.normal(size=(16, 2)))
  points = plane @ basis.T + rng.normal(size=16)
  coords = np.asarray(emb.pca_2d(points))
  distance = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
  np.testing.assert_allclose(distance(coords), distance(plane), atol=1e-4)
  # The first axis is the wide one; signs are fixed, so rotating the
  # input leaves the picture as it is.
  assert coords[:, 0].std() > coords[:, 1].std()
  turned = points @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
  np.testing.assert_allclose(emb.pca_2d(turned), coords, atol=1e-4)
