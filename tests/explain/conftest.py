"""The default CNN trained briefly on real digits, from two seeds, and the
same network re-initialised: what the attribution tests explain."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from bigml_jax.models import build_model
from experiments.configs import default

TRAIN_STEPS = 150


def digits() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 digits as the `digits` builder stores them ([N, 8, 8, 1] in
  [0, 1]) and their labels."""
  data = load_digits()
  images = np.round(data.images * (255 / 16)) / 255
  return images[..., None].astype(np.float32), data.target.astype(np.int32)


def _trainer(model):
  """train(params, images, labels, seed) -> params after TRAIN_STEPS steps
  of Adam on batches of 64 (one compiled step for every seed)."""
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = model.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  def train(params, images, labels, seed):
    opt_state = tx.init(params)
    order = np.random.default_rng(seed)
    for _ in range(TRAIN_STEPS):
      batch = order.integers(0, len(images), 64)
      params, opt_state = step(params, opt_state, images[batch],
                               labels[batch])
    return params

  return train


@pytest.fixture(scope='session')
def digits_cnn():
  """The default config's CNN (without dropout), trained from seeds 0 and
  1 on digits 360..1796, and re-initialised from seed 2; `images` and
  `labels` are digits 0..359, which it did not see."""
  config = default.get_config()
  config.model.dropout_rate = 0.0
  model = build_model(config.model, num_classes=10)
  images, labels = digits()
  # 'rbg' keys: init compiles several times faster than with threefry.
  init = jax.jit(lambda seed: nn.unbox(model.init(
      jax.random.key(seed, impl='rbg'), images[:1])['params']))
  train = _trainer(model)
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  trained = train(init(0), images[360:], labels[360:], 0)
  trained_again = train(init(1), images[360:], labels[360:], 1)
  accuracy = float((jnp.argmax(apply_fn(trained, images[:360]), -1) ==
                    labels[:360]).mean())
  return types.SimpleNamespace(
      model=model, apply_fn=apply_fn, trained=trained,
      trained_again=trained_again, random=init(2), images=images[:360],
      labels=labels[:360], accuracy=accuracy)
