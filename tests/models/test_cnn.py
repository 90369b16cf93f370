"""The CNN over sequences [B, L, C]: 1-D convolutions and pooling, checked
against lax by hand; kernel sizes; sharded forward."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest
from jax import lax

from bigml_jax import ConfigError, build_model
from bigml_jax.models import CNN
from bigml_jax.models import cnn as cnn_lib
from tests.models.test_transformer import assert_sharded_forward_matches


def _init(model, x):
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda x: nn.unbox(model.init(key, x)['params']))(x)


def _sequences(batch=3, length=11, channels=2, seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, length, channels)).astype(np.float32)


def test_1d_cnn_is_conv_relu_pool_then_dense_by_hand():
  model = CNN(channels=(4, 5), dense=(6,), num_classes=3, kernel_size=(3,))
  x = _sequences()
  params = _init(model, x)
  assert params['Conv_0']['kernel'].shape == (3, 2, 4)
  h = x
  for i in range(2):
    conv = params[f'Conv_{i}']
    h = lax.conv_general_dilated(h, conv['kernel'], (1,), 'SAME',
                                 dimension_numbers=('NWC', 'WIO', 'NWC'))
    h = np.maximum(h + conv['bias'], 0)
    length = h.shape[1] // 2  # 11 -> 5 -> 2: odd ends dropped (VALID).
    h = np.asarray(h)[:, :2 * length].reshape(3, length, 2, -1).max(axis=2)
  h = np.maximum(h.reshape(3, -1) @ params['Dense_0']['kernel'] +
                 params['Dense_0']['bias'], 0)
  want = h @ params['Dense_1']['kernel'] + params['Dense_1']['bias']
  got = model.apply({'params': params}, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('length', [8, 9])
def test_1d_pooling_equals_flax_max_pool(length):
  x = _sequences(length=length, channels=3)
  np.testing.assert_array_equal(
      cnn_lib._max_pool_by_2(x),  # pylint: disable=protected-access
      nn.max_pool(x, (2,), strides=(2,), padding='VALID'))


def test_sequences_without_channels_read_as_one_channel():
  model = CNN(channels=(4,), dense=(), num_classes=2, kernel_size=5)
  x = _sequences(channels=1)
  params = _init(model, x)
  np.testing.assert_array_equal(model.apply({'params': params}, x[..., 0]),
                                model.apply({'params': params}, x))


def test_kernel_sizes_fit_the_input():
  # The default (3, 3) fits sequences as 3; one int fits any input.
  assert cnn_lib._kernel((3, 3), 1) == (3,)  # pylint: disable=protected-access
  assert cnn_lib._kernel(5, 2) == (5, 5)  # pylint: disable=protected-access
  model = build_model(ml_collections.ConfigDict(
      {'name': 'cnn', 'channels': (4,), 'dense': (), 'kernel_size': (3, 5)}),
                      num_classes=2)
  with pytest.raises(ConfigError, match=r'kernel_size \(3, 5\) does not fit '
                     '1-D inputs; give 1 sizes or one'):
    model.init(jax.random.key(0), _sequences())
  with pytest.raises(ConfigError, match=r'takes \[B, L, C\] sequences or '
                     r'\[B, H, W, C\] images; got shape \(1, 2, 3, 4, 5\)'):
    model.init(jax.random.key(0), np.zeros((1, 2, 3, 4, 5), np.float32))


def test_1d_kernels_are_named_and_shard():
  model = CNN(channels=(8,), dense=(16,), num_classes=4, kernel_size=(3,))
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), _sequences())))['params']
  assert tuple(specs['Conv_0']['kernel']) == (None, None, 'embed')
  assert_sharded_forward_matches(model, _sequences(batch=8))
