"""Classification: softmax cross-entropy and accuracy over masked examples."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigml_jax.models import build_model
from bigml_jax.tasks.base import Task

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
  """Trains `model(inputs) -> logits [B, num_classes]` on integer labels.

  Batches are dicts with the inputs under `input_key` ('image' [B, H, W, C],
  'tokens' [B, L], ...), 'label' [B] int and, in eval, 'mask' [B] (1 for real
  examples, 0 for padding). Train batches mixed by mixup or cutmix also hold
  'mix_label' [B] int and 'mix_weight' [B] float: the loss and accuracy are
  then mix_weight * those of 'label' + (1 - mix_weight) * those of
  'mix_label'.
  """
  model: nn.Module
  input_key: str = 'image'

  @classmethod
  def from_config(cls, config, *, num_classes: int,
                  vocab_size: int | None = None) -> 'ClassificationTask':
    """`vocab_size` comes with text data and goes to the model too."""
    text = {} if vocab_size is None else {'vocab_size': vocab_size}
    return cls(build_model(config.model, num_classes=num_classes, **text),
               input_key=config.dataset.get('input_key',
                                            'tokens' if text else 'image'))

  def init(self, rng: jax.Array, batch: Batch) -> Any:
    """Returns the model's params (boxed with logical axis names)."""
    return self.model.init({'params': rng}, batch[self.input_key],
                           train=False)['params']

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean loss over real examples, and metric *sums* for exact averaging.

    Returns:
      loss: scalar, mean cross-entropy over examples with mask 1.
      metrics: 'loss_sum', 'correct', 'count', summed over real examples, so
        sums over steps or eval batches divide out to exact means.
    """
    logits = self.model.apply({'params': params}, batch[self.input_key],
                              train=train,
                              rngs={'dropout': rng})
    mask = batch.get('mask', jnp.ones(batch['label'].shape, jnp.float32))
    loss_of = lambda labels: optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
    losses = loss_of(batch['label'])
    hits = (logits.argmax(-1) == batch['label']).astype(jnp.float32)
    if 'mix_label' in batch:  # mixup / cutmix: a weighted pair of labels.
      w = batch['mix_weight']
      losses = w * losses + (1 - w) * loss_of(batch['mix_label'])
      hits = w * hits + (1 - w) * (logits.argmax(-1) == batch['mix_label'])
    count = mask.sum()
    loss_sum = (losses * mask).sum()
    correct = (hits * mask).sum()
    metrics = {'loss_sum': loss_sum, 'correct': correct, 'count': count}
    return loss_sum / jnp.maximum(count, 1.0), metrics

  def summarize(self, sums: dict[str, float]) -> dict[str, float]:
    """Metric sums (over steps or eval batches) -> mean loss and accuracy."""
    count = max(sums['count'], 1.0)
    return {'loss': sums['loss_sum'] / count,
            'accuracy': sums['correct'] / count}
