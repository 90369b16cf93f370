"""MultiHeadAttention: the flax reference, masks, both implementations."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError
from bigml_jax.models import attention
from bigml_jax.models.attention import MultiHeadAttention

# Row 0 has 3 real positions then 2 pads; row 1 has 5 real ones.
VALID = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


def _inputs(shape=(2, 5, 8), seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init(model, *args):
  """Jitted init; an 'rbg' key compiles several times faster than threefry
  on CPU, and these tests need parameters, not a particular stream."""
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda *a: nn.unbox(model.init(key, *a)['params']))(*args)


class ShapesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_output_shape_and_dtype(self, dtype):
    model = MultiHeadAttention(num_heads=2, qkv_features=4, out_features=6,
                               dropout_rate=0.5, dtype=dtype)
    x, context = _inputs((2, 5, 8)), _inputs((2, 3, 8), seed=1)
    params = _init(model, x, context)
    apply = self.variant(lambda p, x, c: model.apply(
        {'params': p}, x, c, mask=attention.padding_mask(VALID[:, :3]),
        train=True, rngs={'dropout': jax.random.key(1, impl='rbg')}))
    out = apply(params, x, context)
    chex.assert_shape(out, (2, 5, 6))
    chex.assert_type(out, dtype)
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize('causal', [False, True])
def test_equals_flax_multi_head_dot_product_attention(causal):
  x = _inputs()
  model = MultiHeadAttention(num_heads=2)
  params = _init(model, x)
  mask = attention.padding_mask(VALID)
  ours = jax.jit(lambda p, x: model.apply({'params': p}, x, mask=mask,
                                          causal=causal))(params, x)
  if causal:
    mask = attention.combine_masks(mask, attention.causal_mask(5))
  reference = nn.MultiHeadDotProductAttention(num_heads=2)
  theirs = jax.jit(lambda p, x: reference.apply({'params': p}, x, mask=mask))(
      params, x)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_cross_attention_equals_flax():
  x, context = _inputs((2, 5, 8)), _inputs((2, 3, 8), seed=1)
  model = MultiHeadAttention(num_heads=2, qkv_features=6, out_features=4)
  params = _init(model, x, context)
  reference = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6,
                                              out_features=4)
  np.testing.assert_allclose(
      model.apply({'params': params}, x, context),
      reference.apply({'params': params}, x, context), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('causal,with_mask', [(False, False), (False, True),
                                              (True, False), (True, True)])
def test_xla_implementation_equals_einsum(causal, with_mask):
  x = _inputs()
  einsum = MultiHeadAttention(num_heads=2)
  xla = einsum.clone(implementation='xla')
  params = _init(einsum, x)
  mask = attention.padding_mask(VALID) if with_mask else None
  run = lambda m: jax.jit(lambda p, x: m.apply(
      {'params': p}, x, mask=mask, causal=causal))(params, x)
  np.testing.assert_allclose(run(xla), run(einsum), rtol=1e-5, atol=1e-5)


def test_attention_weights_formula():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(1, 3, 1, 4)).astype(np.float32)
  k = rng.normal(size=(1, 2, 1, 4)).astype(np.float32)
  logits = q[0, :, 0] @ k[0, :, 0].T / 2.0  # sqrt(d_k) = 2
  expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(attention.attention_weights(q, k)[0, 0], expected,
                             rtol=1e-5)


def test_masked_keys_get_zero_weight_and_full_masks_stay_finite():
  q, k = _inputs((2, 5, 1, 4)), _inputs((2, 5, 1, 4), seed=1)
  mask = attention.combine_masks(attention.padding_mask(VALID),
                                 attention.causal_mask(5))
  weights = np.asarray(attention.attention_weights(q, k, mask))
  np.testing.assert_array_equal(weights[0, 0, :, 3:], 0.0)  # pad keys
  np.testing.assert_array_equal(weights[1, 0][np.triu_indices(5, 1)], 0.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  everything_masked = np.zeros((1, 1, 1, 5), bool)
  row = attention.attention_weights(q[:1], k[:1], everything_masked)
  np.testing.assert_allclose(row, 0.2, rtol=1e-6)


def test_mask_helpers():
  np.testing.assert_array_equal(attention.causal_mask(3)[0, 0],
                                [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
  chex.assert_shape(attention.padding_mask(VALID), (2, 1, 1, 5))
  assert attention.combine_masks(None, None) is None


def test_dropout_only_in_training_and_falls_back_to_einsum():
  x = _inputs()
  model = MultiHeadAttention(num_heads=2, dropout_rate=0.5,
                             implementation='xla')
  params = _init(model, x)
  run = lambda m, train: jax.jit(lambda seed: m.apply(
      {'params': params}, x, train=train,
      rngs={'dropout': jax.random.key(seed, impl='rbg')}))
  evaluate, train = run(model, False), run(model, True)
  np.testing.assert_array_equal(evaluate(1), evaluate(2))
  assert not np.allclose(train(1), train(2))
  # With dropout on, 'xla' trains through the einsum path: same numbers.
  np.testing.assert_array_equal(
      train(1), run(model.clone(implementation='einsum'), True)(1))


def test_logical_axis_names():
  model = MultiHeadAttention(num_heads=2)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), _inputs()))
  specs = nn.get_partition_spec(boxed)['params']
  for name in ('query', 'key', 'value'):
    assert tuple(specs[name]['kernel']) == ('embed', 'heads', 'kv')
    assert tuple(specs[name]['bias']) == ('heads', 'kv')
  assert tuple(specs['out']['kernel']) == ('heads', 'kv', 'embed')
  assert tuple(specs['out']['bias']) == ('embed',)


def test_bad_configuration_errors():
  with pytest.raises(ConfigError, match='not divisible by num_heads 3'):
    MultiHeadAttention(num_heads=3).init(jax.random.key(0), _inputs())
  with pytest.raises(ConfigError, match="implementation 'flash' is unknown"):
    MultiHeadAttention(num_heads=2, implementation='flash').init(
        jax.random.key(0), _inputs())


def _weights_and_qk(model, params, x, **kwargs):
  """The sown weights and the block's own Q and K (its 'query' and 'key'
  projections' outputs, captured)."""
  _, state = model.apply(
      {'params': params}, x, mutable=['intermediates'],
      capture_intermediates=lambda m, _: m.name in ('query', 'key'), **kwargs)
  sown = state['intermediates']
  return (sown[attention.ATTENTION_WEIGHTS][0],
          sown['query']['__call__'][0], sown['key']['__call__'][0])


@pytest.mark.parametrize('implementation', ['einsum', 'xla'])
@pytest.mark.parametrize('causal', [False, True])
def test_returned_weights_are_softmax_of_own_q_and_k(implementation, causal):
  x = _inputs()
  model = MultiHeadAttention(num_heads=2, implementation=implementation)
  params = _init(model, x)
  weights, q, k = _weights_and_qk(model, params, x, causal=causal,
                                  mask=attention.padding_mask(VALID))
  q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
  logits = np.einsum('blhk,bshk->bhls', q, k) / np.sqrt(q.shape[-1])
  allowed = np.broadcast_to(VALID[:, None, None, :], logits.shape)
  if causal:
    allowed = allowed & np.tril(np.ones((5, 5), bool))
  logits = np.where(allowed, logits, -np.inf)
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  chex.assert_shape(weights, (2, 2, 5, 5))
  np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize('implementation', ['einsum', 'xla'])
def test_outputs_bit_equal_with_and_without_returning_weights(implementation):
  x = _inputs()
  model = MultiHeadAttention(num_heads=2, implementation=implementation)
  params = _init(model, x)
  mask = attention.padding_mask(VALID)
  plain = jax.jit(lambda p, x: model.apply({'params': p}, x, mask=mask,
                                           causal=True))
  asked = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, mask=mask, causal=True, mutable=['intermediates']))
  out, state = asked(params, x)
  np.testing.assert_array_equal(plain(params, x), out)
  assert attention.ATTENTION_WEIGHTS in state['intermediates']


def test_weights_not_asked_cost_nothing(monkeypatch):
  """Not asked, the traced computation is that of a module that never sows:
  neither path computes weights it would throw away."""
  x = _inputs()
  for implementation in ('einsum', 'xla'):
    model = MultiHeadAttention(num_heads=2, implementation=implementation)
    params = _init(model, x)
    trace = lambda: str(jax.make_jaxpr(
        lambda p: model.apply({'params': p}, x, causal=True))(params))
    sowing = trace()
    with monkeypatch.context() as patch:
      patch.setattr(MultiHeadAttention, 'sow', lambda *a, **k: False)
      patch.setattr(MultiHeadAttention, 'is_mutable_collection',
                    lambda *a: False)
      assert trace() == sowing


def test_einsum_and_xla_return_the_same_weights():
  x = _inputs()
  einsum = MultiHeadAttention(num_heads=2)
  params = _init(einsum, x)
  mask = attention.padding_mask(VALID)
  weights = [_weights_and_qk(m, params, x, mask=mask, causal=True)[0]
             for m in (einsum, einsum.clone(implementation='xla'))]
  np.testing.assert_allclose(weights[0], weights[1], rtol=1e-6, atol=1e-7)
