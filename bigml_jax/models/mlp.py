"""Dense net: flatten, hidden Dense layers with an activation and dropout."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from bigml_jax.models import layers


class MLP(nn.Module):
  """Multi-layer perceptron classifier.

  Input `x`: [B, ...] (flattened to [B, D]); output logits [B, num_classes].

  Attributes:
    features: widths of the hidden layers, e.g. (128,).
    num_classes: size of the output layer.
    activation: name of a `flax.linen` activation ('relu', 'gelu', 'tanh', ...).
    dropout_rate: dropout after each hidden activation (training only).
  """
  features: Sequence[int]
  num_classes: int
  activation: str = 'relu'
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    act = layers.activation(self.activation)
    x = x.reshape(x.shape[0], -1)
    *hidden, head = layers.chain_axes(len(self.features), 'vocab')
    for width, axes in zip(self.features, hidden):
      x = layers.dense(width, axes)(x)
      x = act(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return layers.dense(self.num_classes, head)(x)
