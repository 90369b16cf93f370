"""RNN cell formula, masked scan over time, the sequence classifier."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl.testing import parameterized

from bigml_jax import ConfigError, build_model
from bigml_jax.models import rnn
from bigml_jax.models.rnn import Recurrent, RNNCell, RNNClassifier
from tests.models.test_transformer import assert_sharded_forward_matches

CELLS = ('rnn', 'lstm', 'gru')


def _init(model, *args):
  """Jitted init; an 'rbg' key compiles several times faster than threefry
  on CPU, and these tests need parameters, not a particular stream."""
  key = jax.random.key(0, impl='rbg')
  return jax.jit(lambda *a: nn.unbox(model.init(key, *a)['params']))(*args)


def _dropout_rngs(seed=1):
  return {'dropout': jax.random.key(seed, impl='rbg')}


@functools.cache
def _classifier(cell):
  """A tiny classifier and its params, made once per cell type (the params'
  shapes do not depend on B or L)."""
  model = RNNClassifier(vocab_size=20, num_classes=3, cell=cell, embed_dim=8,
                        hidden_dim=8)
  return model, _init(model, _tokens(1, 4))


def _tokens(batch, length, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(1, 20, (batch, length)).astype(np.int32)


def test_rnn_cell_equals_formula_on_a_hand_computed_case():
  w = np.array([[0.5, -0.25], [0.0, 1.0]], np.float32)
  u = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]], np.float32)
  b = np.array([0.1, -0.2], np.float32)
  x_1xTxD = np.array([[[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]], np.float32)
  # By hand: h_1 = tanh(U x_1 + b) = tanh([-2 + 0.1, 3 - 0.2]),
  # h_2 = tanh(W h_1 + U x_2 + b).
  h1 = np.tanh(np.array([-1.9, 2.8]))
  h2 = np.tanh(w @ h1 + u @ x_1xTxD[0, 1] + b)
  model = Recurrent(RNNCell(2))
  params = {'cell': {'W': w, 'U': u, 'b': b}}
  assert jax.tree.structure(_init(model, x_1xTxD)) == jax.tree.structure(params)
  outputs, last = model.apply({'params': params}, x_1xTxD)
  np.testing.assert_allclose(outputs[0], np.stack([h1, h2]), rtol=1e-6)
  np.testing.assert_allclose(last[0], h2, rtol=1e-6)


@pytest.mark.parametrize('cell', CELLS)
def test_masked_steps_freeze_the_state_and_output_zero(cell):
  x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  model = Recurrent(rnn.make_cell(cell, 4))
  params = _init(model, x, mask)
  apply = jax.jit(lambda x, m: model.apply({'params': params}, x, m))
  outputs, last = apply(x, mask)
  alone_outputs, alone_last = apply(x[:1, :3], mask[:1, :3])
  np.testing.assert_array_equal(outputs[0, 3:], 0.0)
  np.testing.assert_allclose(outputs[0, :3], alone_outputs[0], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(last[0], alone_last[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(last[1], outputs[1, -1], rtol=1e-6)


class ClassifierTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*CELLS)
  def test_logits_shape_and_dtype(self, cell):
    model, params = _classifier(cell)
    model = model.clone(dropout_rate=0.5)
    tokens = _tokens(2, 6)
    apply = self.variant(lambda p, t: model.apply(
        {'params': p}, t, train=True, rngs=_dropout_rngs()))
    logits = apply(params, tokens)
    chex.assert_shape(logits, (2, 3))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('cell', CELLS)
def test_classifier_ignores_padding(cell):
  model, params = _classifier(cell)
  tokens = _tokens(1, 4)
  padded = np.concatenate([np.pad(tokens, ((0, 0), (0, 3))),  # 3 pads
                           _tokens(1, 7, seed=1)])
  apply = jax.jit(lambda t: model.apply({'params': params}, t))
  np.testing.assert_allclose(apply(padded)[0], apply(tokens)[0], rtol=1e-5,
                             atol=1e-6)


def test_logical_axis_names():
  model = RNNClassifier(vocab_size=20, num_classes=3, cell='rnn')
  specs = nn.get_partition_spec(jax.eval_shape(
      lambda: model.init(jax.random.key(0), _tokens(1, 4))))['params']
  assert tuple(specs['cell']['W']) == ('mlp', None)
  assert tuple(specs['cell']['U']) == ('mlp', 'embed')
  assert tuple(specs['cell']['b']) == ('mlp',)
  assert tuple(specs['embed']['embedding']) == ('vocab', 'embed')
  assert tuple(specs['head']['kernel']) == ('mlp', 'vocab')
  lstm = nn.get_partition_spec(jax.eval_shape(
      lambda: RNNClassifier(20, 3, cell='lstm').init(jax.random.key(0),
                                                     _tokens(1, 4))))['params']
  assert tuple(lstm['cell']['ii']['kernel']) == ('embed', 'mlp')
  assert tuple(lstm['cell']['hi']['kernel']) == (None, 'mlp')


def test_sharded_forward_matches_single_device():
  model = RNNClassifier(vocab_size=20, num_classes=3, cell='gru', embed_dim=8,
                        hidden_dim=8)
  tokens = _tokens(8, 5)
  tokens[:4, 2:] = 0
  assert_sharded_forward_matches(model, tokens)


def test_build_model_and_unknown_cell():
  cfg = ml_collections.ConfigDict({'name': 'rnn_classifier', 'vocab_size': 20,
                                   'cell': 'gru', 'hidden_dim': 8})
  model = build_model(cfg, num_classes=4)
  assert isinstance(model, RNNClassifier) and model.num_classes == 4
  # A ConfigError, which the CLI reports in one line (it is a ValueError).
  with pytest.raises(ConfigError, match="cell 'elman' is unknown"):
    RNNClassifier(20, 3, cell='elman').init(jax.random.key(0), _tokens(1, 2))


def test_sequence_classifier_is_the_last_state_through_a_dense_head():
  """Float sequences: logits = head(h_L) of the Elman recursion, by hand."""
  model = build_model(ml_collections.ConfigDict(
      {'name': 'rnn_sequence', 'cell': 'rnn', 'hidden_dim': 4}), num_classes=3)
  assert isinstance(model, rnn.SequenceClassifier)
  x_BxLxD = np.random.default_rng(0).standard_normal((2, 5, 6), np.float32)
  params = _init(model, x_BxLxD)
  cell, head = params['cell'], params['head']
  assert cell['U'].shape == (4, 6) and head['kernel'].shape == (4, 3)
  h = np.zeros((2, 4), np.float32)
  for t in range(5):
    h = np.tanh(h @ np.asarray(cell['W']).T + x_BxLxD[:, t] @
                np.asarray(cell['U']).T + cell['b'])
  want = h @ np.asarray(head['kernel']) + head['bias']
  logits = model.apply({'params': params}, x_BxLxD)
  chex.assert_shape(logits, (2, 3))
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-6)


def _elman(cell, x_BxLxD):
  """Every state of the Elman recursion, by hand: [B, L, H]."""
  h = np.zeros((len(x_BxLxD), cell['W'].shape[0]), np.float32)
  states = []
  for t in range(x_BxLxD.shape[1]):
    h = np.tanh(h @ np.asarray(cell['W']).T +
                x_BxLxD[:, t] @ np.asarray(cell['U']).T + cell['b'])
    states.append(h)
  return np.stack(states, axis=1)


@pytest.mark.parametrize('readout', rnn.READOUTS)
def test_bidirectional_readouts_by_hand(readout):
  """Forward states, backward states over the reversed sequence (put back
  in time order), and the readout of their concatenation, through the
  head."""
  model = build_model(ml_collections.ConfigDict(
      {'name': 'rnn_sequence', 'cell': 'rnn', 'hidden_dim': 3,
       'bidirectional': True, 'readout': readout}), num_classes=2)
  x = np.random.default_rng(0).standard_normal((2, 5, 4), np.float32)
  params = _init(model, x)
  assert set(params) == {'cell', 'cell_backward', 'head'}
  forward = _elman(params['cell'], x)
  backward = _elman(params['cell_backward'], x[:, ::-1])[:, ::-1]
  states = np.concatenate([forward, backward], axis=-1)  # [B, L, 2H]
  features = {'last': np.concatenate([forward[:, -1], backward[:, 0]], -1),
              'mean': states.mean(axis=1),
              'all': states.reshape(2, -1)}[readout]
  want = features @ np.asarray(params['head']['kernel']) + params['head'][
      'bias']
  np.testing.assert_allclose(model.apply({'params': params}, x), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cell, readout', [('gru', 'last'), ('gru', 'mean'),
                                           ('lstm', 'mean')])
def test_bidirectional_classifier_ignores_padding(cell, readout):
  """Padded tokens are skipped by both directions and left out of the mean:
  a padded sequence reads as the same sequence alone."""
  model = RNNClassifier(vocab_size=20, num_classes=3, cell=cell, embed_dim=8,
                        hidden_dim=8, bidirectional=True, readout=readout)
  tokens = _tokens(1, 4)
  params = _init(model, tokens)
  padded = np.concatenate([np.pad(tokens, ((0, 0), (0, 3))),
                           _tokens(1, 7, seed=1)])
  apply = jax.jit(lambda t: model.apply({'params': params}, t))
  np.testing.assert_allclose(apply(padded)[0], apply(tokens)[0], rtol=1e-5,
                             atol=1e-6)


def test_readout_mistake_and_unidirectional_params_unchanged():
  with pytest.raises(ConfigError, match="readout 'max' is unknown; use one of "
                     'last, mean, all'):
    RNNClassifier(20, 3, readout='max').init(jax.random.key(0), _tokens(1, 2))
  _, params = _classifier('gru')
  assert set(params) == {'embed', 'cell', 'head'}
  assert_sharded_forward_matches(
      RNNClassifier(vocab_size=20, num_classes=3, cell='rnn', embed_dim=8,
                    hidden_dim=8, bidirectional=True, readout='mean'),
      _tokens(8, 5))
