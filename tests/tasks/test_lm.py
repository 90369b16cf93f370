"""LMTask: next-token cross-entropy over real tokens, sums and perplexity."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigml_jax import ConfigError, models
from bigml_jax.tasks import LMTask, build_task
from bigml_jax.training import step as step_lib
from bigml_jax.training.state import TrainState

V = 5


class Bigram(nn.Module):
  """A tiny causal LM, logits at t from token t only: [B, L] -> [B, L, V]."""
  vocab_size: int

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    del train
    return nn.Embed(self.vocab_size, self.vocab_size)(tokens)


def _table():
  return jnp.asarray(np.random.default_rng(0).normal(size=(V, V)), jnp.float32)


def _params(table):
  return {'Embed_0': {'embedding': table}}


def _hand_loss(table, pairs):
  """Mean of -log softmax(table[x])[y] over (input, target) pairs."""
  table = np.asarray(table, np.float64)
  losses = [np.log(np.exp(table[x]).sum()) - table[x, y] for x, y in pairs]
  correct = sum(int(np.argmax(table[x]) == y) for x, y in pairs)
  return np.mean(losses), correct


def _loss(task, table, batch):
  return task.loss_and_metrics(_params(table), batch, jax.random.key(0),
                               train=False)


def test_loss_equals_a_hand_computation():
  task, table = LMTask(Bigram(V)), _table()
  batch = {'tokens': jnp.array([[1, 3, 4, 2, 0, 0], [1, 2, 2, 3, 4, 1]])}
  loss, metrics = _loss(task, table, batch)
  pairs = [(1, 3), (3, 4), (4, 2),  # Row 0 stops at its first PAD target.
           (1, 2), (2, 2), (2, 3), (3, 4), (4, 1)]
  want, correct = _hand_loss(table, pairs)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(metrics['count']) == len(pairs)
  np.testing.assert_allclose(metrics['loss_sum'], want * len(pairs), rtol=1e-6)
  assert float(metrics['correct']) == correct


def test_pad_targets_are_ignored():
  task, table = LMTask(Bigram(V)), _table()
  short = {'tokens': jnp.array([[1, 3, 4, 2]])}
  padded = {'tokens': jnp.array([[1, 3, 4, 2, 0, 0, 0]])}
  loss, metrics = _loss(task, table, short)
  # Whatever the model says at positions whose target is PAD counts nothing.
  loss_p, metrics_p = _loss(task, table.at[0].set(100.0).at[2, 0].set(50.0),
                            padded)
  np.testing.assert_allclose(loss_p, loss, rtol=1e-6)
  assert float(metrics_p['count']) == float(metrics['count']) == 3


def test_eval_mask_removes_whole_rows():
  task, table = LMTask(Bigram(V)), _table()
  row = jnp.array([[1, 3, 4, 2]])
  batch = {'tokens': jnp.concatenate([row, jnp.array([[4, 4, 4, 4]])]),
           'mask': jnp.array([1.0, 0.0])}
  loss, metrics = _loss(task, table, batch)
  want, _ = _loss(task, table, {'tokens': row})
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(metrics['count']) == 3


def test_summarize_gives_per_token_means_and_perplexity():
  task = LMTask(Bigram(V))
  out = task.summarize({'loss_sum': 6.0, 'correct': 3.0, 'count': 4.0})
  assert out['loss'] == 1.5 and out['accuracy'] == 0.75
  assert out['perplexity'] == np.exp(1.5)
  assert task.summarize({'loss_sum': 1e6, 'correct': 0.0,
                         'count': 1.0})['perplexity'] == np.inf


@pytest.fixture
def lm_config(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'bigram', Bigram)
  return ml_collections.ConfigDict({
      'task': 'lm', 'model': {'name': 'bigram'},
      'dataset': {'name': 'kjv_bible', 'input_key': 'tokens'}})


def test_build_task_gives_the_model_the_vocab_size_and_it_learns(lm_config):
  task = build_task(lm_config, vocab_size=7)
  assert isinstance(task, LMTask) and task.model.vocab_size == 7
  batch = {'tokens': jnp.array([[1, 2, 3, 4, 5, 6, 1, 2, 3]] * 4)}
  params = task.init(jax.random.key(0), batch)
  assert params['Embed_0']['embedding'].shape == (7, 7)
  tx = optax.adam(0.1)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=tx.init(params), rng=jax.random.key(1))
  train_step = jax.jit(step_lib.make_train_step(task, tx))
  losses = []
  for _ in range(20):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss_sum'] / metrics['count']))
  assert losses[-1] < 0.5 * losses[0]


def test_sampling_comes_from_the_config(lm_config):
  lm_config.dataset.max_length = 12
  task = build_task(lm_config, vocab_size=7)
  assert (task.num_samples, task.sample_length, task.temperature,
          task.top_k) == (4, 12, 1.0, 0)
  lm_config.sampling = {'num_samples': 0, 'temperature': 0.7, 'top_k': 5,
                        'top_p': 0.9}
  task = build_task(lm_config, vocab_size=7)
  assert (task.num_samples, task.temperature, task.top_k,
          task.top_p) == (0, 0.7, 5, 0.9)
  lm_config.sampling = {'num_sample': 2}
  with pytest.raises(ConfigError, match='sampling has no field.s. num_sample; '
                     'it takes num_samples, temperature, top_k and top_p'):
    build_task(lm_config, vocab_size=7)
