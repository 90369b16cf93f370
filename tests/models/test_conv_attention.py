"""ConvAttention equals its documented formula; the CNN classifier around it."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models.conv_attention import ConvAttention, ConvAttentionCNN


def _init(model, x):
  """Jitted init; an 'rbg' key compiles several times faster than threefry
  on CPU, and these tests need parameters, not a particular stream."""
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda x: nn.unbox(model.init(key, x)['params']))(x)


def _dropout_rngs(seed=1):
  return {'dropout': jax.random.key(seed, impl='rbg')}


def _conv_same(x_HxWxC, conv):
  """Numpy stride-1 SAME convolution (zero padding, odd kernel)."""
  kernel, bias = np.asarray(conv['kernel']), np.asarray(conv['bias'])
  kh, kw = kernel.shape[:2]
  h, w, _ = x_HxWxC.shape
  padded = np.pad(x_HxWxC, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = np.zeros((h, w, kernel.shape[-1]), np.float64)
  for i in range(h):
    for j in range(w):
      patch = padded[i:i + kh, j:j + kw]
      out[i, j] = np.einsum('abc,abcd->d', patch, kernel) + bias
  return out


def _reference(x_HxWxC, params, num_heads):
  """Y = X + concat_h(softmax(Q_h K_h^T / sqrt(d_k)) V_h) W_o + b_o."""
  h, w, c = x_HxWxC.shape
  flat = lambda name: _conv_same(x_HxWxC, params[name]).reshape(h * w, -1)
  q, k, v = flat('query'), flat('key'), flat('value')
  heads = []
  split = lambda m: np.split(m, num_heads, axis=1)
  for q_h, k_h, v_h in zip(split(q), split(k), split(v)):
    logits = q_h @ k_h.T / np.sqrt(q_h.shape[1])
    a = np.exp(logits - logits.max(1, keepdims=True))
    heads.append(a / a.sum(1, keepdims=True) @ v_h)
  o = np.concatenate(heads, axis=1) @ np.asarray(params['out']['kernel'])[0, 0]
  return x_HxWxC + (o + np.asarray(params['out']['bias'])).reshape(h, w, c)


@pytest.mark.parametrize('num_heads,kernel_size,qk_features', [
    (1, (1, 1), None), (2, (3, 3), 4)])
def test_conv_attention_equals_formula(num_heads, kernel_size, qk_features):
  x = np.random.default_rng(0).normal(size=(2, 3, 2, 4)).astype(np.float32)
  model = ConvAttention(qk_features=qk_features, num_heads=num_heads,
                        kernel_size=kernel_size)
  params = _init(model, x)
  out = jax.jit(lambda p, x: model.apply({'params': p}, x))(params, x)
  chex.assert_shape(out, x.shape)
  for b in range(2):
    np.testing.assert_allclose(out[b], _reference(x[b], params, num_heads),
                               rtol=1e-4, atol=1e-5)


def test_conv_attention_mixes_every_position():
  """One changed pixel changes the output at every position (a conv alone
  would change only its neighbourhood)."""
  x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype(np.float32)
  model = ConvAttention()
  params = _init(model, x)
  apply = jax.jit(lambda x: model.apply({'params': params}, x))
  changed = x.copy()
  changed[0, 0, 0] += 1.0
  diff = np.abs(np.asarray(apply(changed) - apply(x))).sum(-1)[0]
  assert np.all(diff > 0)


class CNNTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_logits_shape_and_dtype(self):
    model = ConvAttentionCNN(channels=(4, 8), dense=(16,), num_classes=10,
                             attention_after=0, num_heads=2, dropout_rate=0.5)
    images = np.ones((2, 8, 8, 1), np.float32)
    params = _init(model, images)
    apply = self.variant(lambda p, x: model.apply(
        {'params': p}, x, train=True, rngs=_dropout_rngs()))
    logits = apply(params, images)
    chex.assert_shape(logits, (2, 10))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('attention_after', [0, 1, -1])
def test_attention_sits_after_the_chosen_block(attention_after):
  model = ConvAttentionCNN(channels=(4, 8), dense=(), num_classes=10,
                           attention_after=attention_after)
  params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.ones((1, 8, 8, 1))))['params']
  in_channels = (4, 8)[attention_after]
  chex.assert_shape(nn.unbox(params['attention']['query']['kernel']),
                    (1, 1, in_channels, in_channels))


def test_logical_axis_names():
  model = ConvAttentionCNN(channels=(4,), dense=(), num_classes=10)
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.ones((1, 8, 8, 1)))))['params']
  assert tuple(specs['attention']['query']['kernel']) == (None, None, 'embed',
                                                          'heads')
  assert tuple(specs['attention']['out']['kernel']) == (None, None, 'heads',
                                                        'embed')
  assert tuple(specs['attention']['out']['bias']) == ('embed',)


def test_build_model():
  cfg = ml_collections.ConfigDict({'name': 'conv_attention_cnn',
                                   'channels': (4,), 'dense': (8,)})
  model = build_model(cfg, num_classes=10)
  assert isinstance(model, ConvAttentionCNN) and model.num_classes == 10


def test_heads_must_divide_features():
  with pytest.raises(ConfigError, match='num_heads 3 must divide'):
    ConvAttention(num_heads=3).init(jax.random.key(0), np.ones((1, 2, 2, 4)))
