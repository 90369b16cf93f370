"""GAN networks: shapes under jit and without, output range, axis names."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models.gan import (DCGANDiscriminator, DCGANGenerator,
                                  MLPDiscriminator, MLPGenerator)


class GanShapesTest(parameterized.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.parameters(
      (DCGANGenerator(output_shape=(8, 8, 1), latent_dim=16,
                      channels=(8, 4)), (3, 16), (3, 8, 8, 1)),
      (DCGANGenerator(output_shape=(16, 8, 3), latent_dim=4, channels=(8,)),
       (2, 4), (2, 16, 8, 3)),
      (DCGANDiscriminator(channels=(4, 8)), (3, 8, 8, 1), (3,)),
      (MLPGenerator(output_shape=(2,), latent_dim=2, features=(16,)),
       (5, 2), (5, 2)),
      (MLPDiscriminator(features=(16, 16)), (5, 2), (5,)),
  )
  def test_output_shape(self, model, input_shape, output_shape):
    x = jax.random.uniform(jax.random.key(0), input_shape)
    params = nn.unbox(model.init(jax.random.key(1), x)['params'])
    out = self.variant(lambda p, x: model.apply({'params': p}, x))(params, x)
    chex.assert_shape(out, output_shape)
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)


def test_dcgan_generator_images_are_in_unit_interval():
  model = DCGANGenerator(output_shape=(8, 8, 1), latent_dim=8, channels=(8, 4))
  z = 10 * jax.random.normal(jax.random.key(0), (16, 8))
  images = model.apply(model.init(jax.random.key(1), z), z)
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_dcgan_generator_rejects_indivisible_shape():
  model = DCGANGenerator(output_shape=(6, 8, 1), channels=(8, 4))
  with pytest.raises(ConfigError, match='divisible by 2\\*\\*len'):
    model.init(jax.random.key(0), jnp.zeros((1, model.latent_dim)))


def test_params_carry_logical_axis_names():
  model = DCGANGenerator(output_shape=(8, 8, 1), latent_dim=8, channels=(8, 4))
  specs = nn.get_partition_spec(
      model.init(jax.random.key(0), jnp.zeros((1, 8)))['params'])
  assert tuple(specs['Dense_0']['kernel']) == ('embed', None)
  assert tuple(specs['ConvTranspose_0']['kernel']) == (None, None, None,
                                                       'embed')


@pytest.mark.parametrize('name,cls', [
    ('dcgan_generator', DCGANGenerator),
    ('dcgan_discriminator', DCGANDiscriminator),
    ('mlp_generator', MLPGenerator),
    ('mlp_discriminator', MLPDiscriminator)])
def test_registry_builds_each_network(name, cls):
  fields = {'output_shape': (2,)} if 'generator' in name else {}
  model = build_model(ml_collections.ConfigDict({'name': name, **fields}))
  assert isinstance(model, cls)

