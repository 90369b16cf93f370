"""Language modelling: next-token cross-entropy over real (non-pad) tokens."""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigml_jax.vocab import EOS_ID, PAD_ID
from bigml_jax.errors import ConfigError
from bigml_jax.models import build_model, sampling
from bigml_jax.tasks.base import Task

Batch = dict[str, jax.Array]


def special_id(model: nn.Module, name: str, default: int | None
               ) -> int | None:
  """The model's `pad_id` / `eos_id` (its tokenizer's), else the default."""
  return getattr(model, name, default)


def summarize_tokens(sums: dict[str, float]) -> dict[str, float]:
  """`token_loss` sums -> per-token loss, accuracy and perplexity."""
  count = max(float(sums['count']), 1.0)
  loss = float(sums['loss_sum']) / count
  return {'loss': loss, 'accuracy': float(sums['correct']) / count,
          # math.exp raises past ~709; a diverged run reads inf instead.
          'perplexity': math.exp(loss) if loss < 700 else math.inf}


def token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of logits [..., vocab] against targets [...] int, each
  token weighted by `weights` [...]: (mean over the weight, metric sums
  'loss_sum', 'correct' (argmax == target), 'count' (sum of weights))."""
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets)
  count = weights.sum()
  loss_sum = (losses * weights).sum()
  correct = ((logits.argmax(-1) == targets) * weights).sum()
  metrics = {'loss_sum': loss_sum, 'correct': correct, 'count': count}
  return loss_sum / jnp.maximum(count, 1.0), metrics


@dataclasses.dataclass(frozen=True)
class LMTask(Task):
  """Trains a causal `model(tokens [B, L]) -> logits [B, L, vocab]`.

  Batches hold `input_key` ('tokens') int [B, L + 1]: the model reads
  tokens[:, :-1] and predicts tokens[:, 1:]. Targets equal to the model's
  `pad_id` (PAD_ID by default) carry no loss; with a tokenizer that has no
  pad token (GPT-2's, whose id 0 is a real token), 'valid' [B, L + 1] (0 at
  padding) marks them instead. In eval 'mask' [B] (0 for padding examples)
  removes whole rows.
  """
  model: nn.Module
  input_key: str = 'tokens'
  # What `samples` draws (the loop shows them at each eval; 0 = none):
  # documents of up to sample_length tokens (None = the model's max_len).
  num_samples: int = 4
  sample_length: int | None = None
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  # Its 'count' metric counts tokens: the loop logs tokens/s from it.
  counts: str = dataclasses.field(default='tokens', init=False)

  @classmethod
  def from_config(cls, config, *, vocab_size: int) -> 'LMTask':
    """`config.sampling` (optional) sets num_samples, temperature, top_k
    and top_p (`sampling.sample_logits`);
    samples are as long as the training windows (`dataset.max_length`):
    positions past those have untrained position embeddings."""
    sampling = dict(config.get('sampling') or {})
    unknown = sorted(set(sampling) -
                     {'num_samples', 'temperature', 'top_k', 'top_p'})
    if unknown:
      raise ConfigError(f'sampling has no field(s) {", ".join(unknown)}; it '
                        'takes num_samples, temperature, top_k and top_p')
    if (sampling.get('num_samples', 0) < 0 or sampling.get('top_k', 0) < 0 or
        sampling.get('temperature', 0) < 0 or
        not 0 < sampling.get('top_p', 1) <= 1):
      raise ConfigError('sampling.num_samples, top_k and temperature must be '
                        f'>= 0 and top_p in (0, 1], got {sampling}')
    return cls(build_model(config.model, vocab_size=vocab_size),
               input_key=config.dataset.get('input_key', 'tokens'),
               sample_length=config.dataset.get('max_length'), **sampling)

  def init(self, rng: jax.Array, batch: Batch) -> Any:
    """Returns the model's params (boxed with logical axis names)."""
    return self.model.init({'params': rng}, batch[self.input_key][:, :-1],
                           train=False)['params']

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss per real target token, and metric *sums* for exact averaging.

    Returns:
      loss: scalar, mean cross-entropy over target tokens that are not
        padding (in rows with mask 1).
      metrics: 'loss_sum', 'correct' (argmax == target), 'count' (target
        tokens), summed, so sums over steps or batches divide out to exact
        per-token means.
    """
    tokens = batch[self.input_key]
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = self.model.apply({'params': params}, inputs, train=train,
                              rngs={'dropout': rng})
    pad_id = special_id(self.model, 'pad_id', PAD_ID)
    weights = (jnp.ones(targets.shape, jnp.float32) if pad_id is None else
               (targets != pad_id).astype(jnp.float32))
    if 'valid' in batch:
      weights = weights * batch['valid'][:, 1:].astype(jnp.float32)
    if 'mask' in batch:
      weights = weights * batch['mask'].astype(jnp.float32)[:, None]
    return token_loss(logits, targets, weights)

  def summarize(self, sums: dict[str, float]) -> dict[str, float]:
    return summarize_tokens(sums)

  def samples(self, params: Any, rng: jax.Array) -> jax.Array:
    """`num_samples` documents sampled from the model, each begun at EOS:
    token ids [N, T], T = sample_length capped at the model's max_len. A
    document's closing EOS and all after it are PAD (EOS for a tokenizer
    without PAD), so `tokenizer.decode` reads just that document."""
    length = min(self.sample_length or self.model.max_len, self.model.max_len)
    eos_id, fill_id = self.eos_and_fill_ids()
    prompt = jnp.full((self.num_samples, 1), eos_id, jnp.int32)
    return sampling.generate(self.model, params, prompt, rng,
                             num_tokens=length - 1,
                             temperature=self.temperature, top_k=self.top_k,
                             top_p=self.top_p, stop_id=eos_id,
                             pad_id=fill_id)

  def eos_and_fill_ids(self) -> tuple[int, int]:
    """(EOS, what fills a sample after it): the model's ids (its
    tokenizer's), PAD, or EOS again for a tokenizer without PAD."""
    eos_id = special_id(self.model, 'eos_id', EOS_ID)
    pad_id = special_id(self.model, 'pad_id', PAD_ID)
    return eos_id, eos_id if pad_id is None else pad_id
