"""ViT on 8x8x1 images: shapes, tokens per patch size, names, sharding."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models.vit import ViT
from tests.models.test_transformer import assert_sharded_forward_matches

TINY = dict(d_model=16, num_layers=1, num_heads=2, mlp_dim=32)


def _images(batch=2, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, 8, 8, 1)).astype(
      np.float32)


def _init(model, x):
  """Jitted init; an 'rbg' key compiles several times faster than threefry
  on CPU, and these tests need parameters, not a particular stream."""
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda x: nn.unbox(model.init(key, x)['params']))(x)


class ShapesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((2, 'cls'), (4, 'mean'))
  def test_logits_shape_and_dtype(self, patch_size, pooling):
    model = ViT(num_classes=10, patch_size=patch_size, pooling=pooling,
                dropout_rate=0.1, **TINY)
    images = _images()
    params = _init(model, images)
    apply = self.variant(lambda p, x: model.apply(
        {'params': p}, x, train=True,
        rngs={'dropout': jax.random.key(1, impl='rbg')}))
    logits = apply(params, images)
    chex.assert_shape(logits, (2, 10))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('patch_size,pooling,tokens', [
    (2, 'cls', 17), (2, 'mean', 16), (4, 'cls', 5), (4, 'mean', 4)])
def test_tokens_per_image(patch_size, pooling, tokens):
  model = ViT(num_classes=10, patch_size=patch_size, pooling=pooling, **TINY)
  params = nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), _images()))['params'])
  chex.assert_shape(params['positions']['pos_embedding'], (tokens, 16))
  chex.assert_shape(params['patch_embed']['kernel'],
                    (patch_size, patch_size, 1, 16))
  assert ('cls' in params) == (pooling == 'cls')


def test_patch_embedding_is_a_dense_layer_per_patch():
  model = ViT(num_classes=10, patch_size=4, pooling='mean', **TINY)
  images = _images(1)
  params = _init(model, images)
  _, state = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, capture_intermediates=True,
      mutable=['intermediates']))(params, images)
  patches_1x2x2xD = state['intermediates']['patch_embed']['__call__'][0]
  kernel = np.asarray(params['patch_embed']['kernel']).reshape(16, 16)
  bottom_right = images[0, 4:, 4:, 0].reshape(16)  # patch (1, 1), row-major
  np.testing.assert_allclose(
      patches_1x2x2xD[0, 1, 1],
      bottom_right @ kernel + params['patch_embed']['bias'],
      rtol=1e-5, atol=1e-6)


def test_logical_axis_names():
  model = ViT(num_classes=10, patch_size=4, **TINY)
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), _images())))['params']
  assert tuple(specs['patch_embed']['kernel']) == (None, None, None, 'embed')
  assert tuple(specs['cls']) == (None, None, 'embed')
  assert tuple(specs['positions']['pos_embedding']) == ('length', 'embed')
  assert tuple(specs['head']['kernel']) == ('embed', 'vocab')
  assert tuple(specs['encoder']['block_0']['mlp']['hidden']['kernel']) == (
      'embed', 'mlp')


def test_sharded_forward_matches_single_device():
  assert_sharded_forward_matches(ViT(num_classes=10, patch_size=4, **TINY),
                                 _images(8))


def test_build_model_and_errors():
  cfg = ml_collections.ConfigDict({'name': 'vit', 'patch_size': 2, **TINY})
  model = build_model(cfg, num_classes=10)
  assert isinstance(model, ViT) and model.num_classes == 10
  with pytest.raises(ConfigError, match='patch_size 16 is larger than the 8x8'):
    ViT(num_classes=10, patch_size=16).init(jax.random.key(0), _images())
  with pytest.raises(ConfigError, match="pooling 'max' is unknown"):
    ViT(num_classes=10, pooling='max').init(jax.random.key(0), _images())
