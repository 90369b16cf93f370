"""Masked language modelling (BERT pretraining): predict hidden tokens."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.models import build_model
from bigml_jax.tasks.base import Task
from bigml_jax.tasks.lm import (PAD_ID, special_id, summarize_tokens,
                                token_loss)

Batch = dict[str, jax.Array]
# Random replacements are drawn from [FIRST_ORDINARY_ID, vocab_size): past
# PAD and EOS of bigml_jax.data.text. (A Hugging Face vocabulary's specials
# may then be drawn too, as its own data collator draws from all ids.)
FIRST_ORDINARY_ID = 2


@dataclasses.dataclass(frozen=True)
class MLMTask(Task):
  """Trains `model(tokens [B, L], masked [B, L]) -> logits [B, L, vocab]`
  (e.g. `BertMLM`; it must have a `vocab_size`) to recover corrupted tokens,
  as BERT is pretrained.

  Each step chooses `mask_rate` of the real (not the model's `pad_id`)
  tokens of 'tokens' [B, L] at random (the first `model.max_len` of them, if
  the model has a `max_len`: an LM dataset's windows are one token longer);
  of those, 80% are masked (the model reads [MASK] there: its `mask_id`
  token or mask embedding), 10% are replaced by a random ordinary token and
  10% are kept. The loss is the cross-entropy at the chosen positions only.
  Eval corrupts each batch with a key drawn from its tokens, so eval is
  deterministic. Labels, if the data has any, are not used: a labelled text
  set pretrains the encoder that a classifier then fine-tunes
  (`config.init_from`).
  """
  model: nn.Module
  input_key: str = 'tokens'
  mask_rate: float = 0.15

  @classmethod
  def from_config(cls, config, *, vocab_size: int,
                  num_classes: int | None = None) -> 'MLMTask':
    del num_classes  # Pretraining ignores the labels of a labelled set.
    return cls(build_model(config.model, vocab_size=vocab_size),
               input_key=config.dataset.get('input_key', 'tokens'))

  def init(self, rng: jax.Array, batch: Batch) -> Any:
    """Returns the model's params (boxed with logical axis names)."""
    tokens = self._tokens(batch)
    return self.model.init({'params': rng}, tokens, tokens == self._pad_id,
                           train=False)['params']

  @property
  def _pad_id(self) -> int:
    return special_id(self.model, 'pad_id', PAD_ID)

  def _tokens(self, batch: Batch) -> jax.Array:
    return batch[self.input_key][:, :getattr(self.model, 'max_len', None)]

  def corrupt(self, tokens: jax.Array, rng: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """tokens [B, L] -> (inputs [B, L], masked [B, L] bool, chosen [B, L]
    bool): what the model reads, where it sees the mask embedding, and where
    it is scored."""
    choose_key, kind_key, random_key = jax.random.split(rng, 3)
    real = tokens != self._pad_id
    chosen = real & (jax.random.uniform(choose_key, tokens.shape)
                     < self.mask_rate)
    kind = jax.random.uniform(kind_key, tokens.shape)
    masked = chosen & (kind < 0.8)
    replaced = chosen & (kind >= 0.8) & (kind < 0.9)
    random_ids = jax.random.randint(random_key, tokens.shape,
                                    FIRST_ORDINARY_ID, self.model.vocab_size,
                                    dtype=tokens.dtype)
    return jnp.where(replaced, random_ids, tokens), masked, chosen

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss per chosen token, and metric *sums* ('loss_sum', 'correct',
    'count': chosen tokens in rows with mask 1)."""
    tokens = self._tokens(batch)
    if not train:
      # The eval step passes one fixed key; vary the corruption by batch.
      rng = jax.random.fold_in(rng, tokens.sum(dtype=jnp.int32))
    corrupt_key, dropout_key = jax.random.split(rng)
    inputs, masked, chosen = self.corrupt(tokens, corrupt_key)
    logits = self.model.apply({'params': params}, inputs, masked, train=train,
                              rngs={'dropout': dropout_key})
    weights = chosen.astype(jnp.float32)
    if 'mask' in batch:
      weights = weights * batch['mask'].astype(jnp.float32)[:, None]
    return token_loss(logits, tokens, weights)

  def summarize(self, sums: dict[str, float]) -> dict[str, float]:
    """Loss, accuracy and perplexity per chosen token."""
    return summarize_tokens(sums)
