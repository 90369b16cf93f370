"""The LM and MLM tasks with a pretrained model's special ids (GPT-2: no
pad, and id 0 is a real token; BERT: [PAD] and [MASK] where its vocabulary
has them) instead of the trained tokenizers' PAD 0 and EOS 1."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.tasks import LMTask, MLMTask

V = 6


class Bigram(nn.Module):
  """Logits at t from token t only: [B, L] -> [B, L, V], with a tokenizer's
  ids as a pretrained GPT-2 has them."""
  vocab_size: int = V
  pad_id: int | None = None
  eos_id: int = 5
  max_len: int = 8

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    del train
    return nn.Embed(self.vocab_size, self.vocab_size)(tokens)


def test_lm_without_pad_counts_id_0_and_masks_by_valid():
  task = LMTask(Bigram())
  tokens = np.array([[5, 0, 0, 3, 0], [5, 2, 0, 5, 1]], np.int32)
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
  params = task.init(jax.random.key(0), {'tokens': tokens})
  table = np.asarray(params['Embed_0']['embedding'])
  _, metrics = task.loss_and_metrics(params, {'tokens': tokens,
                                              'valid': valid},
                                     jax.random.key(0), train=False)
  # Targets: row 0 all four (three are id 0), row 1 the first two.
  pairs = [(5, 0), (0, 0), (0, 3), (3, 0), (5, 2), (2, 0)]
  logp = jax.nn.log_softmax(table, axis=-1)
  assert float(metrics['count']) == 6
  np.testing.assert_allclose(float(metrics['loss_sum']),
                             -sum(float(logp[x, y]) for x, y in pairs),
                             rtol=1e-6)
  # With the trained tokenizers' PAD 0, id-0 targets would not count.
  _, ours = LMTask(Bigram(pad_id=0)).loss_and_metrics(
      params, {'tokens': tokens}, jax.random.key(0), train=False)
  assert float(ours['count']) == 4


def test_lm_samples_start_and_end_at_the_models_eos():
  task = LMTask(Bigram(), num_samples=3, temperature=0.0)
  table = np.full((V, V), -5.0, np.float32)
  table[5, 2], table[2, 5] = 5.0, 5.0  # EOS -> 2 -> EOS -> ...
  samples = np.asarray(task.samples({'Embed_0': {'embedding': table}},
                                    jax.random.key(0)))
  # Begun at EOS 5; after the closing EOS, EOS again (there is no pad).
  np.testing.assert_array_equal(samples, [[5, 2, 5, 5, 5, 5, 5, 5]] * 3)


class MaskedBigram(nn.Module):
  vocab_size: int = 40
  pad_id: int = 7
  mask_id: int = 3

  @nn.compact
  def __call__(self, tokens, masked=None, *, train: bool = False):
    del train
    if masked is not None:
      tokens = jnp.where(masked, self.mask_id, tokens)
    return nn.Embed(self.vocab_size, self.vocab_size)(tokens)


def test_mlm_never_chooses_the_models_pad_id():
  task = MLMTask(MaskedBigram(), mask_rate=0.5)
  tokens = np.random.default_rng(0).integers(0, 40, (64, 32)).astype(np.int32)
  tokens[:, 20:] = 7
  _, masked, chosen = task.corrupt(jnp.asarray(tokens), jax.random.key(0))
  chosen, masked = np.asarray(chosen), np.asarray(masked)
  assert not chosen[tokens == 7].any()
  # Id 0 is an ordinary token here, chosen like any other.
  assert 0.25 < chosen[tokens == 0].mean() < 0.75  # ~32 of them.
  assert 0.4 < chosen[tokens != 7].mean() < 0.6
  assert not (masked & ~chosen).any()
