"""Shapes under jit and without, registry errors, pooling equivalence."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models import CNN, MLP
from bigml_jax.models import layers


class ModelShapesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      (MLP(features=(16, 8), num_classes=10, dropout_rate=0.5), (4, 8, 8, 1)),
      (CNN(channels=(4, 8), dense=(16,), num_classes=10), (4, 8, 8, 1)),
      (CNN(channels=(4,), dense=(), num_classes=3), (2, 9, 7, 3)),
  )
  def test_logits_shape_and_dtype(self, model, input_shape):
    x = jnp.ones(input_shape)
    params = nn.unbox(model.init(jax.random.key(0), x)['params'])

    @self.variant
    def apply(params, x):
      return model.apply({'params': params}, x, train=True,
                         rngs={'dropout': jax.random.key(1)})

    logits = apply(params, x)
    chex.assert_shape(logits, (input_shape[0], model.num_classes))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)

  def test_params_carry_logical_axis_names(self):
    model = MLP(features=(16,), num_classes=10)
    boxed = model.init(jax.random.key(0), jnp.ones((1, 8)))['params']
    specs = nn.get_partition_spec(boxed)
    self.assertEqual(tuple(specs['Dense_0']['kernel']), ('embed', 'mlp'))
    self.assertEqual(tuple(specs['Dense_1']['bias']), ('vocab',))

  def test_dropout_only_in_training(self):
    model = MLP(features=(64,), num_classes=10, dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (4, 8))
    params = nn.unbox(model.init(jax.random.key(0), x)['params'])
    run = lambda train, seed: model.apply(
        {'params': params}, x, train=train, rngs={'dropout': jax.random.key(seed)})
    np.testing.assert_array_equal(run(False, 1), run(False, 2))
    self.assertFalse(np.allclose(run(True, 1), run(True, 2)))


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_equals_flax_max_pool(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  expected = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
  np.testing.assert_array_equal(layers.max_pool_2x2(x), expected)


def test_build_model_passes_hyperparameters():
  cfg = ml_collections.ConfigDict({'name': 'cnn', 'channels': (4,), 'dense': (8,)})
  model = build_model(cfg, num_classes=7)
  assert isinstance(model, CNN)
  assert (model.channels, model.dense, model.num_classes) == ((4,), (8,), 7)


def test_build_model_unknown_name_lists_known():
  with pytest.raises(ConfigError, match=r"model.name 'resnet' is unknown; "
                     r'known models: bag_of_embeddings, bert, bert_mlm, cnn, '
                     r'conv_attention_cnn, .*mlp, '):
    build_model(ml_collections.ConfigDict({'name': 'resnet'}))


def test_build_model_unknown_hyperparameter():
  cfg = ml_collections.ConfigDict({'name': 'mlp', 'features': (4,), 'widht': 3})
  with pytest.raises(ConfigError, match='no hyperparameter.*widht'):
    build_model(cfg, num_classes=10)


@pytest.mark.parametrize('kernel,strides,padding', [
    ((4, 4), (2, 2), 'SAME'), ((3, 3), (2, 2), 'SAME'),
    ((5, 3), (3, 2), 'SAME'), ((4, 4), (2, 2), 'VALID'),
    ((3, 3), (1, 1), 'SAME'), ((2, 2), (3, 3), 'VALID')])
def test_conv_transpose_equals_flax(kernel, strides, padding):
  x = jax.random.normal(jax.random.key(1), (2, 5, 6, 3))
  ours = layers.ConvTranspose(4, kernel, strides=strides, padding=padding)
  flax_layer = nn.ConvTranspose(4, kernel, strides=strides, padding=padding)
  params = flax_layer.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes(ours.init(jax.random.key(0), x), params)
  expected = flax_layer.apply(params, x)
  np.testing.assert_allclose(ours.apply(params, x), expected, atol=1e-5)
  np.testing.assert_allclose(  # The matmul form, whatever the backend.
      layers.conv_transpose_by_matmul(x, params['params']['kernel'], strides,
                                      padding) + params['params']['bias'],
      expected, atol=1e-5)
  # Gradients agree too (the generator trains through them).
  loss = lambda f, k: jnp.sum(jnp.sin(f(x, k)))
  by_lax = lambda x, k: jax.lax.conv_transpose(
      x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  by_matmul = lambda x, k: layers.conv_transpose_by_matmul(x, k, strides,
                                                           padding)
  k = params['params']['kernel']
  np.testing.assert_allclose(jax.grad(lambda k: loss(by_matmul, k))(k),
                             jax.grad(lambda k: loss(by_lax, k))(k),
                             rtol=1e-4, atol=1e-4)


def test_a_model_hyperparameter_the_model_rejects_is_a_config_error():
  with pytest.raises(ConfigError, match=r"^model 'gpt': remat 'al' is unknown; "
                     r'use one of none, full, dots, dots_no_batch$'):
    build_model(ml_collections.ConfigDict(
        {'name': 'gpt', 'vocab_size': 8, 'remat': 'al'}))


def test_build_model_from_a_plain_dict():
  model = build_model({'name': 'mlp', 'features': (16,)}, num_classes=3)
  assert isinstance(model, MLP) and model.num_classes == 3
  with pytest.raises(ConfigError, match='a model config needs a name'):
    build_model({'features': (16,)})
