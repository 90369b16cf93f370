"""generate / sample_logits: greedy, temperature and top-k draws, limits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigml_jax import ConfigError
from bigml_jax.models import build_model
from bigml_jax.models.sampling import generate, sample_logits
from bigml_jax.tasks import LMTask

V = 5


class Successor(nn.Module):
  """Causal toy LM: after token x it predicts (x + 1) % V, surely."""
  max_len: int = 8

  @nn.compact
  def __call__(self, tokens, *, train=False):
    del train
    self.param('unused', nn.initializers.zeros_init(), (1,))
    return 20.0 * jax.nn.one_hot((tokens + 1) % V, V)


def test_greedy_continues_each_prompt():
  out = generate(Successor(), {'unused': jnp.zeros(1)},
                 jnp.array([[3], [0]]), jax.random.key(0), num_tokens=5,
                 temperature=0.0)
  np.testing.assert_array_equal(out, [[3, 4, 0, 1, 2, 3], [0, 1, 2, 3, 4, 0]])
  assert out.dtype == jnp.int32


@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_draws_follow_the_tempered_softmax(temperature):
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = jax.vmap(lambda k: sample_logits(logits, k, temperature=temperature)
                  )(jax.random.split(jax.random.key(0), 20000))[:, 0]
  freq = np.bincount(np.asarray(draws), minlength=4) / 20000
  expected = np.asarray(jax.nn.softmax(logits[0] / temperature))
  np.testing.assert_allclose(freq, expected, atol=0.015)


@pytest.mark.parametrize('top_p,kept', [(0.7, [0.5, 0.3]), (0.5, [0.5]),
                                         (0.9, [0.5, 0.3, 0.15])])
def test_top_p_draws_from_the_nucleus_renormalised(top_p, kept):
  probs = [0.5, 0.3, 0.15, 0.05]
  logits = jnp.log(jnp.array([probs]))
  draws = jax.vmap(lambda k: sample_logits(logits, k, top_p=top_p))(
      jax.random.split(jax.random.key(3), 20000))[:, 0]
  freq = np.bincount(np.asarray(draws), minlength=4) / 20000
  expected = np.array(kept + [0.0] * (4 - len(kept))) / sum(kept)
  np.testing.assert_allclose(freq, expected, atol=0.015)


def test_top_k_draws_only_the_k_largest():
  logits = jnp.array([[0.0, 3.0, 1.0, 2.9]])
  draws = jax.vmap(lambda k: sample_logits(logits, k, top_k=2))(
      jax.random.split(jax.random.key(1), 2000))[:, 0]
  assert set(np.asarray(draws).tolist()) == {1, 3}
  assert sample_logits(logits, jax.random.key(2), top_k=1)[0] == 1


def test_a_gpt_extends_its_prompt_within_max_len():
  model = build_model({'name': 'gpt', 'vocab_size': 11, 'num_layers': 1,
                       'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
                       'max_len': 10})
  prompt = jnp.array([[1, 4, 5], [1, 2, 3]])
  params = model.init(jax.random.key(0), prompt)['params']
  params = nn.unbox(params)
  out = generate(model, params, prompt, jax.random.key(3), num_tokens=7)
  assert out.shape == (2, 10)
  np.testing.assert_array_equal(out[:, :3], prompt)
  assert 0 <= int(out.min()) and int(out.max()) < 11
  # A causal model's first new token depends on the prompt alone.
  greedy = generate(model, params, prompt, jax.random.key(3), num_tokens=7,
                    temperature=0.0)
  first = model.apply({'params': params}, prompt)[:, -1].argmax(-1)
  np.testing.assert_array_equal(greedy[:, 3], first)
  with pytest.raises(ConfigError, match="exceeds the model's max_len 10"):
    generate(model, params, prompt, jax.random.key(3), num_tokens=8)


def test_lm_samples_start_at_eos_and_end_at_the_next_one():
  task = LMTask(Successor(max_len=8), num_samples=2)
  out = task.samples({'unused': jnp.zeros(1)}, jax.random.key(0))
  # Successor's draws are certain: EOS 2 3 4 PAD EOS ..., cut after EOS.
  np.testing.assert_array_equal(out, [[1, 2, 3, 4, 0, 0, 0, 0]] * 2)


def test_a_gpts_key_value_cache_decodes_as_the_full_model():
  """The cached path (one position a step) draws what rerunning the whole
  sequence draws, greedy and sampled, and its logits match."""
  model = build_model({'name': 'gpt', 'vocab_size': 13, 'num_layers': 2,
                       'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
                       'max_len': 12})
  prompt = jnp.array([[1, 4, 5], [1, 2, 3]])
  params = nn.unbox(model.init(jax.random.key(0), prompt)['params'])
  # A model without `decode` takes generate's uncached path.
  full = lambda p, t, **kw: model.apply(p, t, **kw)
  uncached = type('Uncached', (), {'apply': staticmethod(full),
                                   'max_len': 12})()
  for kw in (dict(temperature=0.0), dict(temperature=1.0, top_k=5)):
    cached = generate(model, params, prompt, jax.random.key(4), num_tokens=9,
                      **kw)
    plain = generate(uncached, params, prompt, jax.random.key(4),
                     num_tokens=9, **kw)
    np.testing.assert_array_equal(cached, plain)

  decoder = model.clone(decode=True)
  cache = decoder.init(jax.random.key(0), jnp.zeros((2, 12), jnp.int32))['cache']
  tokens = generate(model, params, prompt, jax.random.key(4), num_tokens=9)
  step_logits = []
  for t in range(12):
    logits, updates = decoder.apply({'params': params, 'cache': cache},
                                    tokens[:, t:t + 1], mutable=['cache'])
    cache = updates['cache']
    step_logits.append(logits[:, 0])
  np.testing.assert_allclose(jnp.stack(step_logits, 1),
                             model.apply({'params': params}, tokens),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('attention_impl,dtype,tol', [
    ('einsum', 'float32', 1e-5), ('xla', 'float32', 1e-5),
    ('einsum', 'bfloat16', 0.1)])
def test_prefill_then_steps_match_the_full_model(attention_impl, dtype, tol):
  """A 5-token prefill (several positions in one call) then single steps:
  the logits of every position are the full model's."""
  model = build_model({'name': 'gpt', 'vocab_size': 13, 'num_layers': 2,
                       'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
                       'max_len': 10, 'attention_impl': attention_impl,
                       'dtype': dtype})
  tokens = jax.random.randint(jax.random.key(5), (2, 10), 1, 13)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])
  decoder = model.clone(decode=True)
  cache = decoder.init(jax.random.key(0), tokens)['cache']
  pieces = []
  for start, stop in ((0, 5), (5, 6), (6, 7), (7, 10)):
    logits, updates = decoder.apply({'params': params, 'cache': cache},
                                    tokens[:, start:stop], mutable=['cache'])
    cache = updates['cache']
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, 1),
                             model.apply({'params': params}, tokens),
                             rtol=tol, atol=tol)


def test_decoding_without_a_cache_is_refused():
  model = build_model({'name': 'gpt', 'vocab_size': 13, 'num_layers': 1,
                       'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
                       'max_len': 10})
  tokens = jnp.ones((1, 4), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), tokens)['params'])
  with pytest.raises(ConfigError, match='decode=True needs its cache: init '
                     'it with the whole length'):
    model.clone(decode=True).apply({'params': params}, tokens,
                                   mutable=['cache'])


def test_arguments_generate_cannot_use_are_refused():
  model = Successor()
  params, prompt = {'unused': jnp.zeros(1)}, jnp.array([[1]])
  for kw in (dict(top_p=0.0), dict(temperature=-1.0), dict(num_tokens=-1),
             dict(top_k=-2)):
    with pytest.raises(ConfigError, match=r'generate needs prompt \[B, P\], '
                       r'num_tokens, temperature and top_k >= 0 and top_p in'):
      generate(model, params, prompt, jax.random.key(0),
               **dict(dict(num_tokens=3), **kw))
  with pytest.raises(ConfigError, match=r'got a prompt of shape \(3,\)'):
    generate(model, params, jnp.array([1, 2, 3]), jax.random.key(0),
             num_tokens=2)


class WithDecodeMethod(Successor):
  """flax's wmt Transformer has a `decode` method, not a cache switch."""

  def decode(self, tokens):
    return self(tokens)


def test_a_decode_method_is_not_a_cache_switch():
  out = generate(WithDecodeMethod(), {'unused': jnp.zeros(1)},
                 jnp.array([[3]]), jax.random.key(0), num_tokens=3,
                 temperature=0.0)
  np.testing.assert_array_equal(out, [[3, 4, 0, 1]])
