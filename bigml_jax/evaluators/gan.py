"""How good a GAN's samples are.

ring_coverage: on the 8-Gaussians ring, modes_covered and
  high_quality_share. A sample is high quality within 3 sigma of its nearest
  mode (Srivastava et al., 2017, VEEGAN); a mode is covered when its
  high-quality samples number at least a fifth of its fair share of all
  samples (PacGAN's rule on the 2-D grid: 20 of 100 expected).
frechet_distance: fid, the Frechet distance (Heusel et al., 2017) between
  real and generated samples in the penultimate-layer features of a
  classifier trained with this framework on the same data, and confidence,
  its mean top-class probability on generated samples (confidence_real on
  real ones, for reference).

Both score the samples the GAN task draws for each eval batch
(`GanTask.eval_samples`): those of its EMA generator when it has one.
"""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax import checkpoint
from bigml_jax.errors import ConfigError
from bigml_jax.models import build_model
from bigml_jax.tasks.gan import GanTask

Metrics = dict[str, jax.Array]
# A mode counts as covered with this share of its fair share of samples.
_MODE_COVERED_SHARE = 0.2
_TRAIN_CLASSIFIER = ('python -m experiments.run '
                     '--config=experiments/configs/default.py --workdir={}')


def _check_gan(task, name: str) -> None:
  if not isinstance(task, GanTask):
    raise ConfigError(f"evaluator {name} scores a GAN's samples; this run's "
                      f'task is {type(task).__name__}: remove it from evals')


@dataclasses.dataclass(frozen=True)
class RingCoverage:
  """Modes of the ring (the task's `ring_centers`) covered by high-quality
  samples, within 3 `sigma` of their mode."""
  task: GanTask
  sigma: float

  @classmethod
  def from_options(cls, task, options: dict, *, num_classes: int | None
                   ) -> 'RingCoverage':
    del num_classes  # The task's ring_modes.
    _check_gan(task, 'ring_coverage')
    unknown = sorted(set(options) - {'sigma'})
    if unknown:
      raise ConfigError(f'evaluator ring_coverage has no option(s) '
                        f'{", ".join(unknown)}; it takes sigma')
    if tuple(task.generator.output_shape) != (2,):
      raise ConfigError('evaluator ring_coverage scores 2-D points, but the '
                        'generator makes samples of shape '
                        f'{tuple(task.generator.output_shape)}; use '
                        'frechet_distance for this data')
    return cls(task, sigma=options.get('sigma', task.ring_sigma))

  def sums(self, params: Any, batch: dict, rng: jax.Array) -> Metrics:
    _, fake, mask = self.task.eval_samples(params, batch, rng)
    return self.counts(fake, mask)

  def counts(self, fake: jax.Array, mask: jax.Array) -> Metrics:
    """Sums over samples [B, 2] with mask [B]: high-quality ones, per mode."""
    centers = self.task.ring_centers()
    dist = jnp.linalg.norm(fake[:, None, :] - centers[None], axis=-1)
    good = (dist.min(axis=1) <= 3 * self.sigma) * mask
    nearest = jax.nn.one_hot(dist.argmin(axis=1), self.task.ring_modes)
    return {'high_quality': good.sum(), 'count': mask.sum(),
            'mode_counts': (nearest * good[:, None]).sum(axis=0)}

  def summarize(self, sums: dict) -> dict[str, float]:
    count = max(float(sums['count']), 1.0)
    fair_share = count / self.task.ring_modes
    return {'modes_covered': float(
        (np.asarray(sums['mode_counts']) >= _MODE_COVERED_SHARE * fair_share)
        .sum()), 'high_quality_share': float(sums['high_quality'] / count)}


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
  """|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).

  tr((cov1 cov2)^(1/2)) is computed as the sum of square roots of the
  eigenvalues of s cov2 s with s = cov1^(1/2): that matrix is symmetric PSD
  with the same spectrum, so no complex sqrtm (and its round-off) is needed.
  """
  w, v = np.linalg.eigh(cov1)
  s = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  eig = np.linalg.eigvalsh(s @ cov2 @ s)
  trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
  return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2)
               - 2 * trace_sqrt)


def _mean_and_cov(total: np.ndarray, outer: np.ndarray, n: float):
  mu = total / n
  return mu, (outer - n * np.outer(mu, mu)) / max(n - 1, 1)


def load_classifier(workdir: str | None, num_classes: int,
                    example: np.ndarray) -> tuple[nn.Module, Any]:
  """The model and params of the classification run in `workdir` (its
  config.json and newest checkpoint). `example` [1, ...] is an input of the
  GAN's data, to check that the classifier takes it."""
  if not workdir:
    raise ConfigError(
        'evaluator frechet_distance needs classifier_workdir, the workdir of '
        'a classifier trained on the same data; train one with '
        f'`{_TRAIN_CLASSIFIER.format("/tmp/bigml/default")}` and pass '
        '--config.gan.classifier_workdir=/tmp/bigml/default')
  workdir = os.path.expanduser(workdir)
  if checkpoint.latest_step(os.path.join(workdir, 'checkpoints')) is None:
    raise ConfigError(
        f'classifier_workdir {workdir} holds no checkpoint; train a '
        f'classifier there first: `{_TRAIN_CLASSIFIER.format(workdir)}`')
  # Here, not at the top: GPU images lack ml_collections, and the steps
  # import this package (benchmarks/gpu.py).
  from bigml_jax.config import load_saved_config  # pylint: disable=g-import-not-at-top
  model = build_model(load_saved_config(workdir).model,
                      num_classes=num_classes)
  try:
    template = jax.eval_shape(
        lambda: model.init(jax.random.key(0), example))['params']
  except Exception:  # pylint: disable=broad-except
    template = None  # Shapes that do not fit: said below.
  if template is not None:
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                            nn.unbox(template))
    try:
      params, _ = checkpoint.load_params(workdir, template,
                                         what='classifier_workdir')
      return model, jax.device_get(params)
    except ConfigError:
      pass
  raise ConfigError(f'the classifier in {workdir} does not fit this '
                    "dataset's inputs or classes; train it on the GAN's "
                    'dataset')


def _penultimate_features(model: nn.Module, params: Any, x: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
  """(features [B, D], logits [B, K]): the features are the input of the
  model's last Dense layer, its output head, whatever comes before it."""
  dense_inputs = []

  def keep_dense_inputs(next_fun, args, kwargs, context):
    if (isinstance(context.module, nn.Dense)
        and context.method_name == '__call__'):
      dense_inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(keep_dense_inputs):
    logits = model.apply({'params': params}, x, train=False)
  return dense_inputs[-1].reshape(x.shape[0], -1), logits


@dataclasses.dataclass(frozen=True)
class FrechetDistance:
  """FID and confidence in a trained classifier's features."""
  task: GanTask
  classifier: nn.Module
  classifier_params: Any = dataclasses.field(compare=False)

  @classmethod
  def from_options(cls, task, options: dict, *, num_classes: int | None
                   ) -> 'FrechetDistance':
    _check_gan(task, 'frechet_distance')
    unknown = sorted(set(options) - {'classifier_workdir'})
    if unknown:
      raise ConfigError(f'evaluator frechet_distance has no option(s) '
                        f'{", ".join(unknown)}; it takes classifier_workdir')
    example = np.zeros((1, *task.generator.output_shape), np.float32)
    model, params = load_classifier(options.get('classifier_workdir'),
                                    num_classes, example)
    return cls(task, model, params)

  def sums(self, params: Any, batch: dict, rng: jax.Array) -> Metrics:
    real, fake, mask = self.task.eval_samples(params, batch, rng)
    sums = {'count': mask.sum()}
    for name, x in (('real', real), ('fake', fake)):
      features, logits = _penultimate_features(
          self.classifier, self.classifier_params, x)
      f = features.astype(jnp.float32) * mask[:, None]
      sums[f'{name}_feature_sum'] = f.sum(axis=0)
      sums[f'{name}_feature_outer'] = f.T @ f
      sums[f'{name}_confidence'] = (
          jax.nn.softmax(logits.astype(jnp.float32)).max(axis=-1) * mask).sum()
    return sums

  def summarize(self, sums: dict) -> dict[str, float]:
    count = max(float(sums['count']), 1.0)
    stats = [_mean_and_cov(np.asarray(sums[f'{n}_feature_sum'], np.float64),
                           np.asarray(sums[f'{n}_feature_outer'], np.float64),
                           count) for n in ('real', 'fake')]
    return {'fid': frechet_distance(*stats[0], *stats[1]),
            'confidence': float(sums['fake_confidence'] / count),
            'confidence_real': float(sums['real_confidence'] / count)}
