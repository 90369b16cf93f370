"""ClassificationTask on text: vocab_size reaches the model, tokens are read."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigml_jax import models
from bigml_jax.tasks import ClassificationTask, build_task


class MeanEmbed(nn.Module):
  """Mean of token embeddings -> logits. [B, L] int -> [B, num_classes]."""
  vocab_size: int
  num_classes: int

  @nn.compact
  def __call__(self, tokens, *, train: bool = False):
    del train
    x = nn.Embed(self.vocab_size, 8)(tokens).mean(axis=1)
    return nn.Dense(self.num_classes)(x)


def test_text_classification_gets_vocab_size_and_reads_tokens(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'mean_embed', MeanEmbed)
  config = ml_collections.ConfigDict({
      'model': {'name': 'mean_embed'}, 'dataset': {'name': 'fortunes'}})
  task = build_task(config, num_classes=3, vocab_size=11)
  assert isinstance(task, ClassificationTask) and task.input_key == 'tokens'
  assert (task.model.vocab_size, task.model.num_classes) == (11, 3)
  batch = {'tokens': jnp.array([[3, 4, 0, 0], [10, 2, 5, 0]]),
           'label': jnp.array([2, 0])}
  params = task.init(jax.random.key(0), batch)
  loss, metrics = task.loss_and_metrics(params, batch, jax.random.key(1),
                                        train=False)
  assert np.isfinite(loss) and float(metrics['count']) == 2


def test_image_classification_is_unchanged():
  config = ml_collections.ConfigDict({
      'model': {'name': 'mlp', 'features': (4,)},
      'dataset': {'name': 'digits'}})
  task = build_task(config, num_classes=10)
  assert task.input_key == 'image' and task.model.num_classes == 10
