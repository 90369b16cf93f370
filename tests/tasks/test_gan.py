"""GAN task: phases touch only their network, losses, quality metrics, the
ring run covers the modes, resume restores both networks and optimizers."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest
import scipy.linalg

from bigml_jax import ConfigError, train_and_evaluate
from bigml_jax.tasks import build_task
from bigml_jax.evaluators import build_evaluators
from bigml_jax.evaluators.gan import RingCoverage, frechet_distance
from bigml_jax.training.state import TrainState
from experiments.configs import default, gan_digits, gan_ring


def _override(config, **overrides):
  config.update_from_flattened_dict(overrides)
  return config


def ring_config(data_dir, **overrides):
  """gan_ring.py with small networks: a few steps take a second or two."""
  config = gan_ring.get_config()
  config.dataset.data_dir = data_dir
  return _override(config, **{
      'model.generator.features': (16,), 'model.discriminator.features': (16,),
      'total_steps': 20, 'log_every': 5, 'eval_every': 10,
      'checkpoint_every': 10, 'gan.num_samples': 100,
      'optimizer.schedule': 'constant', **overrides})


def _rows(workdir, split):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def _state(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.device_get(ocp.StandardCheckpointer().restore(path))


def _equal_leaves(a, b) -> list[bool]:
  return jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(np.array_equal(x, y)), a, b))


def _setup(data_dir, **overrides):
  config = ring_config(data_dir, **overrides)
  task = build_task(config, num_classes=8)
  tx, _ = task.make_optimizer(config)
  real = jax.random.normal(jax.random.key(0), (32, 2))
  params = nn.unbox(task.init(jax.random.key(1), {'image': real[:1]}))
  return task, tx, params, tx.init(params), real


def test_each_phase_changes_only_its_network(data_dir):
  task, tx, params, opt_state, real = _setup(data_dir,
                                             **{'gan.ema_decay': 0.9})
  d_params, d_opt, d_metrics = jax.jit(task.discriminator_update,
                                       static_argnums=0)(
      tx, params, opt_state, real, jax.random.key(2))
  assert all(_equal_leaves(d_params['generator'], params['generator']))
  assert all(_equal_leaves(d_params['generator_ema'], params['generator_ema']))
  assert all(_equal_leaves(d_opt['generator'], opt_state['generator']))
  assert not any(_equal_leaves(d_params['discriminator'],
                               params['discriminator']))
  assert float(d_metrics['count']) == 32

  g_params, g_opt, _ = jax.jit(task.generator_update, static_argnums=(0, 3))(
      tx, d_params, d_opt, 32, jax.random.key(3))
  assert all(_equal_leaves(g_params['discriminator'],
                           d_params['discriminator']))
  assert all(_equal_leaves(g_opt['discriminator'], d_opt['discriminator']))
  assert not any(_equal_leaves(g_params['generator'], d_params['generator']))
  # The EMA moves a tenth of the way (decay 0.9) to the new generator.
  jax.tree.map(lambda e, old, new: np.testing.assert_allclose(
      e, 0.9 * old + 0.1 * new, rtol=1e-6, atol=1e-7),
               g_params['generator_ema'], params['generator_ema'],
               g_params['generator'])


def test_train_step_makes_n_critic_discriminator_updates(data_dir):
  task, tx, params, opt_state, real = _setup(data_dir, **{'gan.n_critic': 3})
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=opt_state, rng=jax.random.key(4))
  train_step = jax.jit(task.make_train_step(tx))
  state, metrics = train_step(state, {'image': real})
  counts = {name: int(jax.tree.leaves(state.opt_state[name])[0])
            for name in ('generator', 'discriminator')}
  assert counts == {'generator': 1, 'discriminator': 3}
  assert int(state.step) == 1 and float(metrics['steps']) == 1.0
  assert float(metrics['nonfinite']) == 0
  summary = task.summarize(jax.device_get(metrics))
  assert {'loss', 'd_loss', 'g_loss', 'accuracy', 'd_real_accuracy',
          'd_fake_accuracy', 'd_grad_norm', 'g_grad_norm'} <= set(summary)

  # A NaN batch: the step is counted, but neither network nor optimizer moves.
  after, metrics = train_step(state, {'image': real * np.nan})
  assert float(metrics['nonfinite']) == 1
  assert int(metrics['min_nonfinite_step']) == 2 and int(after.step) == 2
  assert all(_equal_leaves((after.params, after.opt_state),
                           (state.params, state.opt_state)))


@pytest.mark.parametrize('loss,d_loss,g_loss', [
    # D(x) = 2 on the real sample, -1 on the fake one.
    ('non_saturating', np.log1p(np.exp(-2)) + np.log1p(np.exp(-1)),
     np.log1p(np.exp(1))),
    ('hinge', 0.0 + 0.0, 1.0)])
def test_losses(data_dir, loss, d_loss, g_loss):
  task = build_task(ring_config(data_dir, **{'gan.loss': loss}), num_classes=8)
  real, fake = jnp.array([2.0]), jnp.array([-1.0])
  np.testing.assert_allclose(task.d_losses(real, fake), [d_loss], rtol=1e-6)
  np.testing.assert_allclose(task.g_losses(fake), [g_loss], rtol=1e-6)


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 6, 6))
  cov1, cov2 = a @ a.T, b @ b.T + np.eye(6)
  mu1, mu2 = rng.normal(size=(2, 6))
  expected = (((mu1 - mu2) ** 2).sum() + np.trace(cov1 + cov2)
              - 2 * np.trace(scipy.linalg.sqrtm(cov1 @ cov2).real))
  assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected,
                                                                 rel=1e-8)
  assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0, abs=1e-8)


def test_ring_metrics_count_modes_and_quality(data_dir):
  task = build_task(ring_config(data_dir), num_classes=8)
  centers = task.ring_centers()
  # 40 samples: 10 on each of 3 modes within 3 sigma, 10 far from every mode.
  fake = np.concatenate([np.repeat(centers[:3], 10, 0) + 0.05 / np.sqrt(2),
                         np.zeros((10, 2))]).astype(np.float32)
  coverage = RingCoverage(task, sigma=task.ring_sigma)
  summary = coverage.summarize(jax.device_get(
      coverage.counts(jnp.asarray(fake), jnp.ones(40))))
  assert summary['modes_covered'] == 3
  assert summary['high_quality_share'] == 0.75


def test_ring_run_covers_at_least_7_of_8_modes(data_dir, tmp_path):
  """gan_ring.py cut from 1,500 to 750 steps: seeds 0 to 4 all cover 8 modes
  with 48-62% high-quality samples, so the bounds leave room for numerics
  that differ on other CPUs."""
  config = gan_ring.get_config()
  config.dataset.data_dir = data_dir
  _override(config, total_steps=750, log_every=750, eval_every=750,
            checkpoint_every=750)
  train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])
  final = _rows(tmp_path, 'eval')[-1]
  assert final['modes_covered'] >= 7
  assert final['high_quality_share'] >= 0.3
  assert os.path.exists(tmp_path / 'samples_000750.png')


def test_resume_restores_both_networks_and_optimizers(data_dir, tmp_path):
  """Resumed from the step-10 checkpoint of a 20-step run, with parameters
  sharded (fsdp), the run ends exactly where it did: G, D, the EMA, both
  optimizer states, the rng and the data position all come back."""
  config = ring_config(data_dir, **{'mesh.data': 1, 'mesh.fsdp': 2,
                                    'gan.ema_decay': 0.9, 'gan.r1_gamma': 0.0})
  two = jax.devices()[:2]
  train_and_evaluate(config, tmp_path / 'full', devices=two)
  shutil.copytree(tmp_path / 'full', tmp_path / 'resumed',
                  ignore=shutil.ignore_patterns('20', 'samples_*'))
  result = train_and_evaluate(config, tmp_path / 'resumed', devices=two)
  assert result['step'] == 20
  full, resumed = _state(tmp_path / 'full', 20), _state(tmp_path / 'resumed',
                                                        20)
  assert set(resumed['params']) == {'generator', 'discriminator',
                                    'generator_ema'}
  assert set(resumed['opt_state']) == {'generator', 'discriminator'}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-7),
               resumed, full)
  # The resumed run drew its step-20 samples itself.
  assert os.listdir(tmp_path / 'resumed').count('samples_000020.png') == 1


def test_image_gan_scores_with_a_trained_classifier(data_dir, tmp_path):
  # Any classifier whose head is a Dense layer works; an MLP compiles fastest.
  classifier = default.get_config()
  _override(classifier, total_steps=30, eval_every=30, checkpoint_every=30,
            log_every=30, **{'dataset.data_dir': data_dir,
                             'optimizer.warmup_steps': 0})
  classifier.model = ml_collections.ConfigDict({'name': 'mlp',
                                                'features': (16,)})
  one_device = jax.devices()[:1]
  train_and_evaluate(classifier, tmp_path / 'cnn', devices=one_device)
  config = gan_digits.get_config()
  _override(config, total_steps=2, log_every=2, eval_every=2,
            checkpoint_every=2, **{
                'dataset.data_dir': data_dir, 'gan.num_samples': 9,
                'gan.classifier_workdir': str(tmp_path / 'cnn'),
                'model.generator.channels': (8, 4),
                'model.discriminator.channels': (4, 8)})
  train_and_evaluate(config, tmp_path / 'gan', devices=one_device)
  final = _rows(tmp_path / 'gan', 'eval')[-1]
  assert np.isfinite(final['fid']) and final['fid'] > 0
  assert 0.1 <= final['confidence'] <= 1.0
  grid = np.asarray(Image.open(tmp_path / 'gan' / 'samples_000002.png'))
  assert grid.shape == (3 * 9 + 1, 3 * 9 + 1)  # 3x3 grid of 8x8, 1px pad


def test_config_errors_name_the_fix(data_dir, tmp_path):
  config = gan_digits.get_config()
  _override(config, **{'dataset.data_dir': data_dir,
                       'gan.classifier_workdir': str(tmp_path / 'none')})
  with pytest.raises(ConfigError, match='experiments/configs/default.py'):
    build_evaluators(config, build_task(config, num_classes=10),
                     num_classes=10)
  with pytest.raises(ConfigError, match="gan.loss 'wgan' is unknown"):
    build_task(ring_config(data_dir, **{'gan.loss': 'wgan'}), num_classes=8)
  bad = ring_config(data_dir)
  bad.optimizer.generator.lr = 1e-3
  with pytest.raises(ConfigError, match='optimizer.generator cannot set lr'):
    build_task(bad, num_classes=8).make_optimizer(bad)
  with pytest.raises(ConfigError, match='does not implement microbatches'):
    train_and_evaluate(ring_config(data_dir, microbatches=2),
                       tmp_path / 'micro')
  with pytest.raises(ConfigError, match='"ring" scores 2-D points'):
    build_task(ring_config(data_dir, **{
        'model.generator.output_shape': (3,)}), num_classes=8)
  with pytest.raises(ConfigError, match=r'output_shape \(3,\) does not match'):
    train_and_evaluate(ring_config(data_dir, **{
        'model.generator.output_shape': (3,), 'gan.quality': 'none'}),
                       tmp_path / 'shape')
