"""MLMTask: BERT's corruption and a loss over the chosen positions only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.tasks import MLMTask

V = 50


class MaskAwareUnigram(nn.Module):
  """logits at t = table[token t] (+ a learned vector where masked)."""
  vocab_size: int = V

  @nn.compact
  def __call__(self, tokens, masked, *, train: bool = False):
    del train
    table = self.param('table', nn.initializers.normal(1.0),
                       (self.vocab_size, self.vocab_size))
    mask_v = self.param('mask', nn.initializers.normal(1.0), (self.vocab_size,))
    return table[tokens] + jnp.where(masked[..., None], mask_v, 0.0)


def _tokens(seed=0, batch=64, length=128, real=100):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, V, size=(batch, length)).astype(np.int32)
  tokens[:, real:] = 0  # PAD
  return jnp.asarray(tokens)


def test_corruption_follows_berts_recipe():
  task = MLMTask(MaskAwareUnigram())
  tokens = _tokens()
  inputs, masked, chosen = map(np.asarray,
                               task.corrupt(tokens, jax.random.key(1)))
  tokens = np.asarray(tokens)
  real = tokens != 0
  assert not chosen[~real].any()
  # 6,400 real tokens: 15% chosen, and of those 80% masked, 10% replaced.
  assert abs(chosen[real].mean() - 0.15) < 0.02
  assert abs(masked[chosen].mean() - 0.8) < 0.05
  assert not masked[~chosen].any()
  changed = inputs != tokens
  assert not changed[~chosen].any() and not changed[masked].any()
  replaced_share = changed[chosen & ~masked].mean()
  # Half of the unmasked chosen tokens are replaced (a random id equals the
  # old one 1 time in 48).
  assert abs(replaced_share - 0.5 * 47 / 48) < 0.1
  assert inputs[changed].min() >= 2 and inputs[changed].max() < V


def test_loss_is_the_mean_cross_entropy_at_chosen_positions():
  task = MLMTask(MaskAwareUnigram())
  tokens = _tokens(batch=4, length=16, real=12)
  params = task.init(jax.random.key(0), {'tokens': tokens})
  rng = jax.random.key(7)
  loss, metrics = task.loss_and_metrics(params, {'tokens': tokens}, rng,
                                        train=True)
  inputs, masked, chosen = task.corrupt(tokens, jax.random.split(rng)[0])
  logits = np.asarray(params['table'], np.float64)[np.asarray(inputs)]
  logits += np.where(np.asarray(masked)[..., None],
                     np.asarray(params['mask'], np.float64), 0.0)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, np.asarray(tokens)[..., None], -1)
  chosen = np.asarray(chosen)
  assert chosen.sum() > 0
  np.testing.assert_allclose(loss, -picked[..., 0][chosen].mean(), rtol=1e-5)
  assert metrics['count'] == chosen.sum()


def test_eval_corrupts_each_batch_its_own_way():
  """The eval step hands every batch the same key; the task folds the batch
  in, so two batches are not scored at the same positions."""
  task = MLMTask(MaskAwareUnigram())
  a = _tokens(seed=0, real=128)
  b = a.at[0, 0].set(a[0, 0] % 40 + 3)  # One token differs.
  params = task.init(jax.random.key(0), {'tokens': a})
  seen = []
  for tokens in (a, b):
    _, metrics = task.loss_and_metrics(params, {'tokens': tokens},
                                       jax.random.key(0), train=False)
    seen.append(float(metrics['count']))
  plain = task.corrupt(a, jax.random.split(jax.random.key(0))[0])[2].sum()
  # Without the fold-in all three would choose the same positions (every
  # token is real); with it the counts (~1,229 +- 32) differ.
  assert len({seen[0], seen[1], float(plain)}) == 3
