"""BERT classifier and GPT LM: shapes, padding, causality, remat, sharding.

`assert_sharded_forward_matches` is shared with the ViT and RNN tests.
"""

import functools

import chex
import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models.transformer import BertClassifier, GPTLM
from bigml_jax.parallel import mesh as mesh_lib

TINY = dict(num_layers=1, d_model=16, num_heads=2, mlp_dim=32, max_len=12)
# Tests share these two models' params (see `_init`) and vary only fields
# that leave the params alone (pooling, dropout, dtype, remat, attention).
BERT = BertClassifier(vocab_size=20, num_classes=3, **TINY)
GPT = GPTLM(vocab_size=20, **TINY)


def assert_sharded_forward_matches(model, x):
  """A jitted forward pass on a data=4, fsdp=2 mesh, with params created
  sharded from their logical names and the batch split over data x fsdp,
  equals the single-device one."""
  mesh = mesh_lib.make_mesh(
      ml_collections.ConfigDict({'data': 4, 'fsdp': 2, 'tensor': 1}))
  init = lambda: model.init(jax.random.key(0, impl='rbg'), x)['params']
  shardings = mesh_lib.logical_shardings(jax.eval_shape(init), mesh)
  params = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
  specs = [p.sharding.spec for p in jax.tree.leaves(params)]
  assert any('fsdp' in tuple(s) for s in specs), 'no parameter is sharded'
  forward = lambda p, x: model.apply({'params': p}, x)
  logits = jax.jit(forward, in_shardings=(
      shardings, mesh_lib.batch_sharding(mesh)))(params, x)
  expected = jax.jit(forward)(jax.device_get(params), x)
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def _tokens(batch, length, vocab=20, seed=0):
  """Random non-pad ids in [1, vocab), made in numpy: eager jnp ops each
  compile a program, which dominates tests this small."""
  rng = np.random.default_rng(seed)
  return rng.integers(1, vocab, (batch, length)).astype(np.int32)


def _padded(batch, length, real):
  """Tokens whose first half of rows hold `real` tokens and then padding."""
  tokens = _tokens(batch, length)
  tokens[:max(batch // 2, 1), real:] = 0
  return tokens


@functools.cache
def _init(model):
  """Params of a BERT/GPT (their shapes do not depend on B or L), made once
  per model: initialising costs more to compile than a forward pass. An
  'rbg' key compiles several times faster than threefry on CPU."""
  key = jax.random.key(0, impl='rbg')
  tokens = jnp.ones((1, 4), jnp.int32)
  return jax.jit(lambda t: nn.unbox(model.init(key, t)['params']))(tokens)


def _dropout_rngs(seed=1):
  return {'dropout': jax.random.key(seed, impl='rbg')}


def _apply(model, params, x, **kwargs):
  """Jitted apply: one compile is far cheaper than eager op-by-op dispatch."""
  forward = lambda p, x: model.apply({'params': p}, x, **kwargs)
  return jax.jit(forward)(params, x)


class ShapesTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_bert_logits(self):
    model = BERT.clone(dropout_rate=0.1)
    tokens = _tokens(2, 7)
    params = _init(BERT)
    apply = self.variant(lambda p, t: model.apply(
        {'params': p}, t, train=True, rngs=_dropout_rngs()))
    logits = apply(params, tokens)
    chex.assert_shape(logits, (2, 3))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gpt_logits(self):
    model = GPT.clone(dropout_rate=0.1)
    tokens = _tokens(2, 7)
    params = _init(GPT)
    apply = self.variant(lambda p, t: model.apply(
        {'params': p}, t, train=True, rngs=_dropout_rngs()))
    logits = apply(params, tokens)
    chex.assert_shape(logits, (2, 7, 20))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('pooling', ['cls', 'mean', 'normalized_sum'])
def test_bert_ignores_padding(pooling):
  model = BERT.clone(pooling=pooling)
  tokens = _tokens(1, 5)
  padded = np.pad(tokens, ((0, 0), (0, 4)))  # 4 pad ids (0) on the right
  params = _init(BERT)
  np.testing.assert_allclose(_apply(model, params, padded),
                             _apply(model, params, tokens),
                             rtol=1e-5, atol=1e-6)


def test_bert_batch_rows_are_independent_of_other_rows_padding():
  model = BERT.clone(pooling='mean')
  a, b = _tokens(1, 8, seed=1), _tokens(1, 8, seed=2)
  b[:, 3:] = 0
  params = _init(BERT)
  both = _apply(model, params, np.concatenate([a, b]))
  np.testing.assert_allclose(both[1], _apply(model, params, b[:, :3])[0],
                             atol=1e-6)


def test_gpt_is_causal_by_gradient():
  model = GPT
  tokens = _tokens(1, 6)
  params = _init(model)
  x_1xLxD = model.apply({'params': params}, tokens,
                        method=lambda m, t: m.positions(m.embed(t)))
  jac = jax.jit(jax.jacrev(lambda x: model.apply(
      {'params': params}, x, method=GPTLM.from_embeddings)))(x_1xLxD)
  # jac[0, t, v, 0, s, d] = d logits[t, v] / d x[s, d].
  influence_LxL = jnp.abs(jac[0, :, :, 0]).sum(axis=(1, 3))
  future = np.triu(np.ones((6, 6), bool), k=1)
  np.testing.assert_array_equal(np.asarray(influence_LxL)[future], 0.0)
  assert np.all(np.asarray(influence_LxL)[~future] > 0)


def test_gpt_future_tokens_do_not_change_past_logits():
  model = GPT
  tokens = _tokens(1, 8)
  changed = tokens.copy()
  changed[:, 5:] = _tokens(1, 3, seed=9)
  params = _init(model)
  before = _apply(model, params, tokens)
  after = _apply(model, params, changed)
  np.testing.assert_allclose(before[:, :5], after[:, :5], atol=1e-6)
  assert not np.allclose(before[:, 5:], after[:, 5:])


def test_gpt_ties_input_and_output_embeddings():
  model = GPT
  tokens = _tokens(2, 4)
  params = _init(model)
  assert set(params) == {'embed', 'positions', 'decoder'}
  hidden = model.apply({'params': params}, tokens,
                       method=lambda m, t: m.decoder(m.positions(m.embed(t)),
                                                     None, False))
  np.testing.assert_allclose(model.apply({'params': params}, tokens),
                             hidden @ params['embed']['embedding'].T,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('policy', ['full', 'dots', 'dots_no_batch'])
def test_remat_keeps_params_and_gradients(policy):
  model = BERT
  tokens = _padded(2, 6, real=4)
  params = _init(model)
  remat = model.clone(remat=policy)
  shapes = jax.eval_shape(lambda: remat.init(jax.random.key(0), tokens))
  assert (jax.tree.structure(nn.unbox(shapes['params'])) ==
          jax.tree.structure(params))
  grad = lambda m: jax.jit(jax.grad(
      lambda p: jnp.sum(m.apply({'params': p}, tokens) ** 2)))(params)
  chex.assert_trees_all_close(grad(remat), grad(model), rtol=1e-5, atol=1e-5)


def test_remat_policies_recompute_what_they_do_not_keep():
  """XLA's FLOP count of the compiled backward pass: the less a policy
  keeps, the more the backward pass recomputes."""
  model = GPTLM(vocab_size=64, num_layers=2, d_model=64, num_heads=4,
                mlp_dim=256, max_len=64)
  tokens = jnp.ones((4, 64), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])

  def flops(policy):
    m = model.clone(remat=policy)
    compiled = jax.jit(jax.grad(lambda p: jnp.sum(
        m.apply({'params': p}, tokens)))).lower(params).compile()
    return compiled.cost_analysis()['flops']

  none, dots, dots_no_batch, full = (
      flops(p) for p in ('none', 'dots', 'dots_no_batch', 'full'))
  assert none < min(dots, dots_no_batch) <= max(dots, dots_no_batch) < full


def test_unknown_remat_policy_fails_at_construction():
  with pytest.raises(ConfigError, match=r"remat 'some' is unknown; use one of "
                     r'none, full, dots, dots_no_batch'):
    GPTLM(vocab_size=8, remat='some')


@pytest.mark.parametrize('model', [BERT, GPT])
def test_xla_attention_matches_einsum(model):
  tokens = _padded(2, 6, real=4)
  params = _init(model)
  np.testing.assert_allclose(
      _apply(model.clone(attention_impl='xla'), params, tokens),
      _apply(model, params, tokens), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  model = BERT.clone(dtype='bfloat16')
  tokens = _tokens(2, 6)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  logits = _apply(model, _init(BERT), tokens)
  reference = _apply(BERT, _init(BERT), tokens)
  chex.assert_type(logits, jnp.float32)
  np.testing.assert_allclose(logits, reference, atol=0.1)


def test_logical_axis_names():
  model = BERT
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), _tokens(1, 4))['params']))
  block = specs['encoder']['block_0']
  assert tuple(specs['embed']['embedding']) == ('vocab', 'embed')
  assert tuple(specs['positions']['pos_embedding']) == ('length', 'embed')
  attention = block['attention']
  assert tuple(attention['query']['kernel']) == ('embed', 'heads', 'kv')
  assert tuple(attention['out']['kernel']) == ('heads', 'kv', 'embed')
  assert tuple(block['mlp']['hidden']['kernel']) == ('embed', 'mlp')
  assert tuple(block['ln_mlp']['scale']) == ('embed',)
  assert tuple(specs['head']['kernel']) == ('embed', 'vocab')


@pytest.mark.parametrize('model', [BERT.clone(pooling='mean'), GPT])
def test_sharded_forward_matches_single_device(model):
  assert_sharded_forward_matches(model, _padded(8, 6, real=3))


def test_build_model_from_config():
  cfg = ml_collections.ConfigDict(dict(name='bert', vocab_size=20, **TINY))
  bert = build_model(cfg, num_classes=4)
  assert isinstance(bert, BertClassifier) and bert.num_classes == 4
  cfg = ml_collections.ConfigDict(dict(name='gpt', vocab_size=20, **TINY))
  assert isinstance(build_model(cfg), GPTLM)


def test_sequence_longer_than_max_len_fails_with_the_fix():
  model = GPTLM(vocab_size=20, **TINY)
  with pytest.raises(ConfigError, match='exceeds max_len 12; raise max_len'):
    model.init(jax.random.key(0), _tokens(1, 13))


def test_bert_mlm_shares_the_classifiers_encoder_names_and_masks_tokens():
  kw = dict(vocab_size=40, num_layers=2, d_model=16, num_heads=2, mlp_dim=32,
            max_len=12, dropout_rate=0.0)
  tokens = jnp.asarray(np.random.default_rng(0).integers(2, 40, (2, 12)))
  mlm = build_model({'name': 'bert_mlm', **kw})
  clf = build_model({'name': 'bert', 'num_classes': 3, **kw})
  masked = jnp.zeros((2, 12), bool).at[:, 3].set(True)
  mlm_params = nn.unbox(mlm.init(jax.random.key(0), tokens, masked))['params']
  clf_params = nn.unbox(clf.init(jax.random.key(0), tokens))['params']
  shapes = lambda p: {k: v.shape for k, v in
                      flax.traverse_util.flatten_dict(p, sep='/').items()}
  mlm_shapes, clf_shapes = shapes(mlm_params), shapes(clf_params)
  common = set(mlm_shapes) & set(clf_shapes)
  assert {k.split('/')[0] for k in common} == {'embed', 'positions', 'encoder'}
  assert all(mlm_shapes[k] == clf_shapes[k] for k in common)
  assert {k.split('/')[0] for k in set(mlm_shapes) - common} == {
      'mask_embedding', 'mlm_transform', 'mlm_norm', 'mlm_bias'}
  assert {k.split('/')[0] for k in set(clf_shapes) - common} == {'head'}

  apply = lambda t: mlm.apply({'params': mlm_params}, t, masked)
  logits = apply(tokens)
  chex.assert_shape(logits, (2, 12, 40))
  assert logits.dtype == jnp.float32
  # A masked position's token is hidden: changing it changes no logit.
  np.testing.assert_array_equal(apply(tokens.at[:, 3].set(5)), logits)
  assert not np.allclose(apply(tokens.at[:, 4].set(5)), logits)


# Hugging Face's BERT as options (bigml_jax.interop.hf reads its weights;
# tests/interop compares the logits with transformers').
HF_BERT = dict(norm='post', type_vocab_size=2, embed_norm=True,
               gelu='exact', layer_norm_epsilon=1e-12)


def test_hf_bert_options_add_its_parameters_and_keep_the_others_names():
  tokens = _tokens(1, 4)
  names = lambda model: set(flax.traverse_util.flatten_dict(
      jax.eval_shape(lambda: nn.unbox(model.init(
          jax.random.key(0), tokens)['params'])), sep='/'))
  default = names(BERT)
  hf = names(BERT.clone(pooler=True, **HF_BERT))
  # Post-LN blocks end normalised: no final LayerNorm.
  assert default - hf == {'encoder/final_norm/scale', 'encoder/final_norm/bias'}
  assert hf - default == {
      'token_types/embedding', 'embed_norm/scale', 'embed_norm/bias',
      'pooler/kernel', 'pooler/bias'}


def test_post_ln_block_normalises_after_each_residual():
  model = BERT.clone(norm='post', pooling='mean')
  params = _init(model)
  capture = lambda x: model.apply({'params': params}, x, capture_intermediates=(
      lambda mdl, _: mdl.name == 'block_0'), mutable=['intermediates'])[1]
  out = capture(_tokens(2, 5))['intermediates']['encoder']['block_0'][
      '__call__'][0]
  # LayerNorm with unit scale, zero bias: each position mean 0, variance 1.
  np.testing.assert_allclose(out.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(out.var(-1), 1, atol=1e-3)


def test_token_types_and_exact_gelu_change_the_function():
  model = BERT.clone(**HF_BERT)
  params = _init(model)
  tokens = _tokens(2, 5)
  logits = _apply(model, params, tokens)
  ones = np.ones_like(tokens)
  assert not np.allclose(_apply(model, params, tokens, token_types_BxL=ones),
                         logits)
  assert not np.allclose(_apply(model.clone(gelu='tanh'), params, tokens),
                         logits)
  np.testing.assert_allclose(
      _apply(model, params, tokens, token_types_BxL=0 * ones), logits)


def test_pad_id_is_the_models():
  model = BERT.clone(pad_id=7, pooling='mean')
  params = _init(BERT)
  tokens = _tokens(1, 5)
  tokens[tokens == 7] = 8
  padded = np.pad(tokens, ((0, 0), (0, 3)), constant_values=7)
  np.testing.assert_allclose(_apply(model, params, padded),
                             _apply(model, params, tokens), atol=1e-6)


def test_mlm_with_a_mask_id_reads_that_token_where_masked():
  mlm = build_model({'name': 'bert_mlm', 'vocab_size': 20, 'mask_id': 3,
                     'dropout_rate': 0.0, **TINY})
  tokens = _tokens(2, 6)
  params = _init(mlm)
  assert 'mask_embedding' not in params
  masked = np.zeros((2, 6), bool)
  masked[:, 2] = True
  with_mask_token = tokens.copy()
  with_mask_token[:, 2] = 3
  np.testing.assert_allclose(_apply(mlm, params, tokens, masked_BxL=masked),
                             _apply(mlm, params, with_mask_token))


@pytest.mark.parametrize('field, value', [('norm', 'middle'),
                                          ('gelu', 'quick')])
def test_unknown_norm_or_gelu_fails_at_construction(field, value):
  with pytest.raises(ConfigError, match=f"{field} '{value}' is unknown; use "
                     'one of'):
    BertClassifier(vocab_size=8, num_classes=2, **{field: value})
