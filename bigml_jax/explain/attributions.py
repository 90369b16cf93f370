"""Attributions: how much each input value moves the logit of a class.

Every method is a pure function of (apply_fn, params, inputs, target):

  apply_fn(params, inputs [B, ...]) -> logits [B, num_classes]
  target: int [B], the class whose logit is explained, per example

and returns float32 attributions of the inputs' shape [B, ...]. Examples are
independent (models run in eval mode), so each method differentiates the sum
of the B target logits once. Close over `apply_fn` (or mark it static) to
jit; vmap maps over any extra leading axis, e.g. one target per class.

Methods that look at k points per example (SmoothGrad's noisy copies,
integrated gradients' path, occlusion's windows) call apply_fn on batches
[B * k, ...] that hold each example's k points consecutively: example-major,
so inputs sharded over a mesh's batch axes keep every device on its own
examples (a vmap over the points would put them first, and XLA then
replicates the whole computation on every device). An apply_fn that closes
over per-example data repeats it k times (`tokens.embedding_apply_fn`).

Token models are attributed at their embeddings (`tokens.py`): the inputs are
then the looked-up vectors [B, L, D], and `tokens.per_token` sums the last
axis.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.errors import ConfigError, check_choice

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# Where integrated gradients samples the path in [0, 1], and each sample's
# weight, for n gradient evaluations (Captum's names without 'riemann_').
RULES = ('trapezoid', 'midpoint', 'left', 'right')


def target_logits(apply_fn: ApplyFn, params: Any, inputs: jax.Array,
                  target: jax.Array) -> jax.Array:
  """logits[b, target[b]]: [B]."""
  logits_BxC = apply_fn(params, inputs)
  return jnp.take_along_axis(logits_BxC, target[:, None].astype(jnp.int32),
                             axis=-1)[:, 0].astype(jnp.float32)


def saliency(apply_fn: ApplyFn, params: Any, inputs: jax.Array,
             target: jax.Array) -> jax.Array:
  """Vanilla gradient (Simonyan et al. 2014): d logit_target / d inputs."""
  total = lambda x: target_logits(apply_fn, params, x, target).sum()
  return jax.grad(total)(inputs).astype(jnp.float32)


def gradient_x_input(apply_fn: ApplyFn, params: Any, inputs: jax.Array,
                     target: jax.Array) -> jax.Array:
  """inputs * d logit_target / d inputs (Shrikumar et al. 2016)."""
  return inputs.astype(jnp.float32) * saliency(apply_fn, params, inputs,
                                               target)


def _over_points(fn: Callable[[jax.Array, jax.Array], jax.Array],
                 points_BxS: jax.Array, target: jax.Array,
                 per_call: int | None) -> jax.Array:
  """fn(points [N, ...], target [N]) -> [N, ...] at S points per example
  [B, S, ...], `per_call` points per example at a time (default all S):
  -> [B, S, ...]."""
  b, s = points_BxS.shape[:2]
  k = min(per_call or s, s)

  def call(points_BxK):
    width = points_BxK.shape[1]
    out = fn(points_BxK.reshape((b * width,) + points_BxK.shape[2:]),
             jnp.repeat(target, width))
    return out.reshape((b, width) + out.shape[1:])

  if k == s:
    return call(points_BxS)
  chunks = -(-s // k)
  # Padded with copies of the last point (dropped again below), so every
  # call has the same shape and compiles once.
  padded = jnp.concatenate(
      [points_BxS, jnp.repeat(points_BxS[:, -1:], chunks * k - s, axis=1)],
      axis=1)
  out_CxBxK = jax.lax.map(call, jnp.moveaxis(
      padded.reshape((b, chunks, k) + padded.shape[2:]), 1, 0))
  out_BxCxK = jnp.moveaxis(out_CxBxK, 0, 1)
  return out_BxCxK.reshape((b, chunks * k) + out_BxCxK.shape[3:])[:, :s]


def _spread(inputs: jax.Array) -> jax.Array:
  """max - min over each example: [B, 1, ...] (broadcasts over the input)."""
  axes = tuple(range(1, inputs.ndim))
  spread = inputs.max(axis=axes) - inputs.min(axis=axes)
  return spread.reshape((-1,) + (1,) * (inputs.ndim - 1)).astype(jnp.float32)


def smoothgrad(apply_fn: ApplyFn, params: Any, inputs: jax.Array,
               target: jax.Array, rng: jax.Array | None = None, *,
               num_samples: int = 25, noise_level: float = 0.15,
               magnitude: bool = False, noise: jax.Array | None = None,
               samples_per_batch: int | None = None) -> jax.Array:
  """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy
  copies of the inputs.

  Sample s of example b is inputs[b] + sigma_b * noise[b, s], sigma_b =
  noise_level * (max - min of inputs[b]) (the paper's 10-20% of the range),
  noise standard normal. `magnitude` averages squared gradients instead (the
  paper's variant, and the PAIR `saliency` package's default).

  Args:
    rng: draws `noise` [B, num_samples, ...] when it is not given.
    noise: standard-normal draws [B, S, ...] to use instead (S samples).
    samples_per_batch: noisy copies of each example per model call (default
      all S at once).
  """
  if noise is None:
    if rng is None:
      raise ConfigError('smoothgrad needs an rng or its noise')
    noise = jax.random.normal(
        rng, inputs.shape[:1] + (num_samples,) + inputs.shape[1:],
        jnp.float32)
  spread = _spread(inputs)[:, None]
  x_BxS = inputs.astype(jnp.float32)[:, None] + spread * noise_level * noise
  grads_BxS = _over_points(
      lambda x, t: saliency(apply_fn, params, x, t), x_BxS, target,
      samples_per_batch)
  return (grads_BxS ** 2 if magnitude else grads_BxS).mean(axis=1)


def path_points(steps: int, rule: str = 'trapezoid'
                ) -> tuple[np.ndarray, np.ndarray]:
  """(alphas [steps], weights [steps]): integrated gradients' quadrature of
  the integral over alpha in [0, 1]; the weights sum to 1."""
  check_choice('integration rule', rule, RULES)
  least = 2 if rule == 'trapezoid' else 1
  if steps < least:
    raise ConfigError(f'integrated gradients with the {rule} rule needs '
                      f'steps >= {least} (got {steps})')
  if rule == 'trapezoid':
    alphas = np.linspace(0.0, 1.0, steps)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2
  else:
    offset = {'midpoint': 0.5, 'left': 0.0, 'right': 1.0}[rule]
    alphas = (np.arange(steps) + offset) / steps
    weights = np.full(steps, 1.0 / steps)
  return alphas.astype(np.float32), weights.astype(np.float32)


def integrated_gradients(apply_fn: ApplyFn, params: Any, inputs: jax.Array,
                         target: jax.Array, *,
                         baseline: jax.Array | float = 0.0, steps: int = 64,
                         rule: str = 'trapezoid',
                         steps_per_batch: int | None = None) -> jax.Array:
  """Integrated gradients (Sundararajan et al. 2017, eq. 1, as a sum):

      IG(x) = (x - x') * integral_0^1 grad f(x' + a (x - x')) da

  with baseline x' (a scalar or an array broadcasting to the inputs; zero
  is a black image, or a zero embedding for tokens). Completeness: IG sums
  to f(x) - f(x') as `steps` grows (tests: within 1% at 64 on the CNN).

  Args:
    steps: gradient evaluations along the path.
    rule: where they sit and how they are weighted (`path_points`).
    steps_per_batch: path points of each example per model call (default
      all `steps`: the whole path is one call on [B * steps, ...]).
  """
  alphas, weights = path_points(steps, rule)
  inputs = inputs.astype(jnp.float32)
  baseline = jnp.broadcast_to(jnp.asarray(baseline, jnp.float32), inputs.shape)
  shape = (1, -1) + (1,) * (inputs.ndim - 1)
  x_BxS = (baseline[:, None] +
           alphas.reshape(shape) * (inputs - baseline)[:, None])
  grads_BxS = _over_points(
      lambda x, t: saliency(apply_fn, params, x, t), x_BxS, target,
      steps_per_batch)
  average = jnp.tensordot(grads_BxS, weights, axes=((1,), (0,)))
  return (inputs - baseline) * average


def occlusion_windows(height: int, width: int, patch: int,
                      stride: int) -> np.ndarray:
  """[P, H, W] bool: the patch x patch windows at `stride` that tile the
  image (the last row and column of windows end at the image's edge)."""
  if not 0 < patch <= min(height, width) or stride < 1:
    raise ConfigError(f'occlusion patch {patch}, stride {stride}: the patch '
                      f'must be 1 to {min(height, width)} pixels and the '
                      'stride >= 1')
  starts = lambda n: sorted(set(range(0, n - patch + 1, stride)) |
                            {n - patch})
  windows = []
  for top in starts(height):
    for left in starts(width):
      window = np.zeros((height, width), bool)
      window[top:top + patch, left:left + patch] = True
      windows.append(window)
  return np.stack(windows)


def occlusion(apply_fn: ApplyFn, params: Any, images: jax.Array,
              target: jax.Array, *, patch: int = 2, stride: int | None = None,
              value: float = 0.0,
              windows_per_batch: int | None = None) -> jax.Array:
  """Occlusion (Zeiler & Fergus 2014): how much the target logit drops when
  a patch x patch window of the image [B, H, W, C] is set to `value`.

  Each pixel gets the mean drop over the windows that cover it (all
  channels the same). Positive: the pixel's window supports the class.
  `stride` defaults to `patch`; `windows_per_batch` occluded copies of the
  batch per model call (default all windows at once).
  """
  if images.ndim != 4:
    raise ConfigError(f'occlusion takes images [B, H, W, C], not shape '
                      f'{tuple(images.shape)}')
  windows_PxHxW = occlusion_windows(images.shape[1], images.shape[2], patch,
                                    stride or patch)
  images = images.astype(jnp.float32)
  hidden_1xPxHxWx1 = jnp.asarray(windows_PxHxW)[None, ..., None]
  occluded_BxP = jnp.where(hidden_1xPxHxWx1, jnp.float32(value),
                           images[:, None])
  logits_BxP = _over_points(
      lambda x, t: target_logits(apply_fn, params, x, t), occluded_BxP,
      target, windows_per_batch)
  drops_BxP = target_logits(apply_fn, params, images, target)[:, None] - (
      logits_BxP)
  windows = windows_PxHxW.astype(np.float32)
  covered_BxHxW = (jnp.einsum('bp,phw->bhw', drops_BxP, windows) /
                   windows.sum(axis=0))
  return jnp.broadcast_to(covered_BxHxW[..., None], images.shape)


METHODS = {
    'saliency': saliency,
    'gradient_x_input': gradient_x_input,
    'smoothgrad': smoothgrad,
    'integrated_gradients': integrated_gradients,
    'occlusion': occlusion,
}
