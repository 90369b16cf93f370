"""Schedules, optimizer choice and where weight decay applies."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigml_jax import ConfigError
from bigml_jax.optim import make_optimizer, make_schedule


def _opt(**kw):
  base = {'name': 'sgd', 'learning_rate': 1.0, 'schedule': 'constant',
          'warmup_steps': 0, 'weight_decay': 0.0, 'grad_clip_norm': 0.0}
  return ml_collections.ConfigDict({**base, **kw})


@pytest.mark.parametrize('schedule,expected', [
    # warmup 10 to lr 1.0, then 90 decay steps.
    ('constant', {0: 0.0, 5: 0.5, 10: 1.0, 55: 1.0, 100: 1.0}),
    ('linear', {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5, 100: 0.0}),
    ('cosine', {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5, 100: 0.0}),
])
def test_schedules(schedule, expected):
  fn = make_schedule(_opt(schedule=schedule, warmup_steps=10), total_steps=100)
  for step, lr in expected.items():
    assert float(fn(step)) == pytest.approx(lr, abs=1e-6), step


@pytest.mark.parametrize('name', ['sgd', 'adam', 'adamw'])
def test_weight_decay_skips_biases(name):
  """With zero gradients only weight decay moves parameters: kernels shrink,
  biases and norm scales (ndim < 2) stay put."""
  params = {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones((4,)),
            'scale': jnp.ones((4,))}
  tx, _ = make_optimizer(_opt(name=name, learning_rate=0.1, weight_decay=0.5),
                         total_steps=10)
  grads = {k: jnp.zeros_like(v) for k, v in params.items()}
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new['bias'], params['bias'])
  np.testing.assert_array_equal(new['scale'], params['scale'])
  assert float(new['kernel'][0, 0]) < 1.0


def test_sgd_step_is_lr_times_grad_with_clipping():
  params = {'w': jnp.zeros((2,))}
  grads = {'w': jnp.array([3.0, 4.0])}  # global norm 5
  tx, _ = make_optimizer(_opt(learning_rate=0.1, grad_clip_norm=1.0), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.06, -0.08], rtol=1e-6)


def test_any_mapping_with_defaults_and_misspelt_fields_named():
  tx, schedule = make_optimizer({'name': 'adam', 'learning_rate': 1e-3},
                                total_steps=10)
  assert float(schedule(5)) == pytest.approx(1e-3)  # 'constant', no warmup.
  params = {'w': jnp.ones((2, 2))}
  updates, _ = tx.update({'w': jnp.ones((2, 2))}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -1e-3 * np.ones((2, 2)), rtol=1e-4)
  with pytest.raises(ConfigError, match=r'optimizer has no field\(s\) '
                     'learnin_rate; its fields are name, learning_rate'):
    make_optimizer(_opt(learnin_rate=0.1), total_steps=10)
  with pytest.raises(ConfigError, match='optimizer needs learning_rate'):
    make_optimizer({'name': 'sgd'}, total_steps=10)
