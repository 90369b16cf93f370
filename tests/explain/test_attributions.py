"""Attribution methods: exact answers on linear models, completeness and the
randomisation sanity check on the digits CNN, PAIR `saliency` as reference,
and jit / vmap / sharded runs."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saliency.core as pair
from jax.sharding import NamedSharding, PartitionSpec as P
from scipy.stats import spearmanr

from bigml_jax import ConfigError
from bigml_jax.explain import attributions as attr
from bigml_jax.parallel import mesh as mesh_lib


def _linear(shape=(4, 3, 2), num_classes=5, seed=0):
  """apply_fn(W, x) = flatten(x) W + b, inputs [B, *shape]."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(int(np.prod(shape)), num_classes)).astype(np.float32)
  x = rng.normal(size=(6,) + shape).astype(np.float32)
  apply_fn = lambda w, x: x.reshape(len(x), -1) @ w + 1.5
  return apply_fn, w, x


def _targets(n, num_classes=5):
  return jnp.arange(n) % num_classes


def test_saliency_of_a_linear_model_equals_its_weights():
  apply_fn, w, x = _linear()
  target = _targets(len(x))
  weights = w.T[np.asarray(target)].reshape(x.shape)
  np.testing.assert_allclose(attr.saliency(apply_fn, w, x, target), weights,
                             rtol=1e-6)
  np.testing.assert_allclose(attr.gradient_x_input(apply_fn, w, x, target),
                             x * weights, rtol=1e-6)
  # The path integral of a constant gradient: exact at any step count.
  for rule in attr.RULES:
    np.testing.assert_allclose(
        attr.integrated_gradients(apply_fn, w, x, target, steps=3, rule=rule,
                                  baseline=0.5),
        (x - 0.5) * weights, rtol=1e-5, atol=1e-6)


def test_occlusion_of_a_linear_model_is_the_windows_share():
  apply_fn, w, _ = _linear(shape=(4, 6, 1))
  x = np.random.default_rng(1).normal(size=(3, 4, 6, 1)).astype(np.float32)
  target = _targets(3)
  contribution = x * w.T[np.asarray(target)].reshape(x.shape)
  # 1x1 windows: each pixel's own x * w.
  np.testing.assert_allclose(
      attr.occlusion(apply_fn, w, x, target, patch=1), contribution,
      rtol=1e-5, atol=1e-6)
  # 2x2 windows at stride 2 tile the image: each pixel gets its window's sum.
  sums = contribution.reshape(3, 2, 2, 3, 2, 1).sum(axis=(2, 4))
  np.testing.assert_allclose(
      attr.occlusion(apply_fn, w, x, target, patch=2),
      np.repeat(np.repeat(sums, 2, axis=1), 2, axis=2), rtol=1e-5, atol=1e-6)
  # Overlapping windows (stride 1): each pixel, the mean of its windows.
  got = attr.occlusion(apply_fn, w, x, target, patch=2, stride=1)
  windows = [contribution[:, i:i + 2, j:j + 2].sum(axis=(1, 2))
             for i in range(3) for j in range(5)]
  covering = [(i, j) for i in range(3) for j in range(5)
              if i <= 1 < i + 2 and j <= 2 < j + 2]  # Pixel (1, 2).
  expected = np.mean([windows[i * 5 + j] for i, j in covering], axis=0)
  np.testing.assert_allclose(got[:, 1, 2], expected, rtol=1e-5, atol=1e-6)


def test_points_in_chunks_equal_all_points_at_once():
  """steps_per_batch and friends change the calls, not the numbers (the
  last chunk is padded, and the padding dropped)."""
  _, w, x = _linear(shape=(4, 6, 1))
  apply_fn = lambda w, x: jnp.tanh(x.reshape(len(x), -1) @ w) ** 2
  target = _targets(len(x))
  noise = np.random.default_rng(2).normal(size=(6, 7, 4, 6, 1))
  for fn, per_call in (
      (functools.partial(attr.integrated_gradients, steps=7), 'steps'),
      (functools.partial(attr.smoothgrad, noise=noise), 'samples'),
      (attr.occlusion, 'windows')):
    whole = jax.jit(lambda w, fn=fn: fn(apply_fn, w, x, target))(w)
    chunked = jax.jit(lambda w, fn=fn, per_call=per_call: fn(
        apply_fn, w, x, target, **{f'{per_call}_per_batch': 4}))(w)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6,
                               err_msg=per_call)


def test_bad_settings_are_config_errors():
  apply_fn, w, x = _linear()
  with pytest.raises(ConfigError, match="rule 'simpson' is unknown"):
    attr.integrated_gradients(apply_fn, w, x, _targets(6), rule='simpson')
  with pytest.raises(ConfigError, match='steps >= 2'):
    attr.integrated_gradients(apply_fn, w, x, _targets(6), steps=1)
  with pytest.raises(ConfigError, match='patch must be 1 to 3 pixels'):
    attr.occlusion(apply_fn, w, x, _targets(6), patch=5)
  with pytest.raises(ConfigError, match='images'):
    attr.occlusion(apply_fn, w, x[..., 0], _targets(6))


def test_integrated_gradients_completeness_on_the_default_cnn(digits_cnn):
  """Attributions sum to f(x) - f(black image): at 64 steps, within 1% of
  the gaps summed over 128 held-out digits, and one by one for at least 95%
  of them (the trapezoid rule's error is in logit units, from ReLU kinks on
  the path: a digit whose gap is small can exceed 1%; all stay in 10%)."""
  assert digits_cnn.accuracy > 0.9  # A trained model, not a random one.
  f, params = digits_cnn.apply_fn, digits_cnn.trained
  x, target = digits_cnn.images[:128], jnp.asarray(digits_cnn.labels[:128])

  @jax.jit
  def ig_and_gap(params):
    ig = attr.integrated_gradients(f, params, x, target, steps=64)
    return ig, (attr.target_logits(f, params, x, target) -
                attr.target_logits(f, params, jnp.zeros_like(x), target))

  ig, gap = ig_and_gap(params)
  error = np.abs(ig.reshape(len(x), -1).sum(-1) - gap)
  assert error.sum() < 0.01 * np.abs(gap).sum()
  assert np.mean(error < 0.01 * np.abs(gap)) >= 0.95
  assert np.all(error < 0.1 * np.abs(gap))


def _rank_correlation(a, b) -> float:
  """Mean over examples of Spearman's rho between |attributions|."""
  a, b = np.abs(a).reshape(len(a), -1), np.abs(b).reshape(len(b), -1)
  return float(np.mean([spearmanr(u, v)[0] for u, v in zip(a, b)]))


@pytest.mark.parametrize('method', ['saliency', 'smoothgrad'])
def test_model_randomisation_sanity_check(digits_cnn, method):
  """Adebayo et al. 2018: attributions of the trained CNN are unlike those
  of the same CNN re-initialised, much more than like another seed's."""
  fn = attr.METHODS[method]
  if method == 'smoothgrad':
    fn = functools.partial(fn, rng=jax.random.key(0), num_samples=8)
  x = digits_cnn.images[:64]
  target = jnp.asarray(digits_cnn.labels[:64])
  explain = jax.jit(lambda p: fn(digits_cnn.apply_fn, p, x, target))
  trained = explain(digits_cnn.trained)
  seeds = _rank_correlation(trained, explain(digits_cnn.trained_again))
  random = _rank_correlation(trained, explain(digits_cnn.random))
  assert seeds > random + 0.2, (seeds, random)


@pytest.fixture(scope='module')
def pair_model(digits_cnn):
  """call_model(target) -> the CNN as PAIR's call_model_function: gradients
  of that class's logit by jax.grad of the model itself (not through the
  code under test)."""
  grad = jax.jit(jax.grad(lambda x, target: digits_cnn.apply_fn(
      digits_cnn.trained, x)[:, target].sum()))

  def call_model(target):
    def call(x_batch, call_model_args=None, expected_keys=None):
      del call_model_args, expected_keys
      return {pair.INPUT_OUTPUT_GRADIENTS:
              np.asarray(grad(jnp.asarray(x_batch, jnp.float32), target))}
    return call

  return call_model


@pytest.mark.parametrize('magnitude', [False, True])
def test_smoothgrad_agrees_with_pair_saliency(digits_cnn, pair_model,
                                              magnitude):
  x, labels = digits_cnn.images[:4], digits_cnn.labels[:4]
  samples, ours_noise, theirs = 10, [], []
  for i in range(len(x)):
    np.random.seed(i)  # PAIR draws its noise from numpy's global state.
    theirs.append(pair.GradientSaliency().GetSmoothedMask(
        x[i], pair_model(int(labels[i])), stdev_spread=0.15,
        nsamples=samples, magnitude=magnitude))
    np.random.seed(i)  # The same draws, as unit normals for ours.
    ours_noise.append([np.random.normal(0, 1, x[i].shape)
                       for _ in range(samples)])
  noise = np.asarray(ours_noise, np.float32)  # [B, S, ...]
  ours = jax.jit(functools.partial(
      attr.smoothgrad, digits_cnn.apply_fn, noise_level=0.15,
      magnitude=magnitude))(digits_cnn.trained, x, jnp.asarray(labels),
                            noise=noise)
  scale = np.abs(np.asarray(theirs)).max()
  np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-4,
                             atol=1e-5 * scale)


def test_integrated_gradients_agrees_with_pair_saliency(digits_cnn,
                                                        pair_model):
  """PAIR sums n gradients at linspace(0, 1, n) and divides by n; ours (the
  trapezoid rule at the same points) halves the two ends and divides by
  n - 1, so n * PAIR = (n - 1) * ours + (g(x') + g(x)) (x - x') / 2."""
  f, params = digits_cnn.apply_fn, digits_cnn.trained
  x, labels, n = digits_cnn.images[:4], digits_cnn.labels[:4], 16
  baseline = np.full_like(x[0], 0.25)
  theirs = np.stack([pair.IntegratedGradients().GetMask(
      x[i], pair_model(int(labels[i])), x_baseline=baseline,
      x_steps=n, batch_size=n) for i in range(len(x))])

  @jax.jit
  def ours_and_ends(x, target):
    ours = attr.integrated_gradients(f, params, x, target, steps=n,
                                     baseline=baseline)
    at_baseline = jnp.broadcast_to(baseline, x.shape)
    ends = (attr.saliency(f, params, at_baseline, target) +
            attr.saliency(f, params, x, target)) * (x - baseline) / 2
    return ours, ends

  ours, ends = ours_and_ends(x, jnp.asarray(labels))
  scale = np.abs(theirs).max()
  np.testing.assert_allclose((n - 1) * ours + ends, n * theirs, rtol=1e-4,
                             atol=1e-5 * n * scale)


def _largest_conv_batch(compiled) -> int:
  """The largest batch of any convolution one device runs."""
  return max(int(b) for b in re.findall(r'f32\[(\d+),[\d,]*\]\S* convolution',
                                        compiled.as_text()))


def test_jit_vmap_and_sharded_give_the_same_attributions(digits_cnn):
  """On an 8-device mesh with the batch sharded, each method's result is
  sharded like the inputs and each device runs only its own example's
  points; the numbers equal one device's, with a vmap over the targets."""
  f, params = digits_cnn.apply_fn, digits_cnn.trained
  x = digits_cnn.images[:8]
  methods = {  # name: (fn, points per example)
      'saliency': (attr.saliency, 1),
      'smoothgrad': (functools.partial(attr.smoothgrad, rng=jax.random.key(3),
                                       num_samples=4), 4),
      'integrated_gradients': (functools.partial(
          attr.integrated_gradients, steps=6, steps_per_batch=4), 4),
      'occlusion': (attr.occlusion, 16),
  }
  mesh = mesh_lib.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  batch = NamedSharding(mesh, P(('data', 'fsdp')))
  x_sharded = jax.device_put(x, batch)
  params_replicated = jax.device_put(params, NamedSharding(mesh, P()))
  targets_2xB = jnp.stack([jnp.full(8, 3), jnp.arange(8)])
  for name, (fn, points) in methods.items():
    one = jax.jit(lambda p, x, t, fn=fn: fn(f, p, x, t)).lower(
        params_replicated, x_sharded, jax.device_put(targets_2xB[0], batch)
    ).compile()
    assert _largest_conv_batch(one) == points, name
    sharded = [one(params_replicated, x_sharded, jax.device_put(t, batch))
               for t in targets_2xB]
    assert sharded[0].sharding.is_equivalent_to(batch, x.ndim), name
    if name in ('smoothgrad', 'integrated_gradients'):
      # On one device, both targets in one vmapped call: the same numbers
      # (SmoothGrad's noise too).
      both = jax.jit(jax.vmap(lambda t, fn=fn: fn(f, params, x, t)))(
          targets_2xB)
      np.testing.assert_allclose(sharded, both, rtol=1e-4, atol=1e-5,
                                 err_msg=name)
