"""GAN: a generator and a discriminator trained in alternation in one step.

Each jitted train step makes `n_critic` discriminator (D) updates, then one
generator (G) update, each network with its own optax optimizer; the G phase
differentiates through D but changes only G, the D phase only D. Losses:
'non_saturating' (Goodfellow et al., 2014, the -log D(G(z)) generator loss)
or 'hinge' (Lim & Ye, 2017; Miyato et al., 2018). An optional exponential
moving average of G's weights ('generator_ema') is what samples and quality
metrics use when it is on.

Config (besides the required fields):
  model.name: 'gan'; model.generator / model.discriminator: a MODELS name
    (dcgan_* for images, mlp_* for points) and its hyperparameters.
  optimizer: shared settings; optimizer.generator / optimizer.discriminator
    override any of them (e.g. learning_rate, b1) for one network.
  gan.loss, gan.n_critic, gan.r1_gamma (weight of the R1 penalty on D's
    input gradient at real samples, 0 = off), gan.ema_decay (0 = off),
    gan.num_samples (drawn for the picture at each eval), gan.plot_extent
    (2-D points: half-width of the scatter plot), gan.quality: 'none' |
    'ring' (gan.ring_radius, gan.ring_sigma) | 'classifier'
    (gan.classifier_workdir).

Metrics: D's and G's losses, D's accuracy on real and on generated samples,
and, in evaluation, sample quality:
  ring: modes_covered and high_quality_share. A sample is high quality
    within 3 sigma of its nearest mode (Srivastava et al., 2017, VEEGAN); a
    mode is covered when its high-quality samples number at least a fifth
    of its fair share of all samples (PacGAN's rule on the 2-D grid: 20 of
    100 expected).
  classifier: fid, the Frechet distance (Heusel et al., 2017) between real
    and generated samples in the penultimate-layer features of a classifier
    trained with this framework on the same data, and confidence, its mean
    top-class probability on generated samples (confidence_real on real ones,
    for reference).
"""

import dataclasses
import os
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

from bigml_jax.errors import ConfigError
from bigml_jax.models import build_model
from bigml_jax.optim import OPTIONAL_FIELDS, make_optimizer
from bigml_jax.tasks.base import NO_STEP

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

LOSSES = ('non_saturating', 'hinge')
QUALITY = ('none', 'ring', 'classifier')
NETWORKS = ('generator', 'discriminator')
# A mode counts as covered with this share of its fair share of samples.
_MODE_COVERED_SHARE = 0.2
_TRAIN_CLASSIFIER = ('python -m experiments.run '
                     '--config=experiments/configs/default.py --workdir={}')


@dataclasses.dataclass(frozen=True)
class GanOptimizers:
  """One optax transformation per network; `init` builds both states."""
  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation

  def init(self, params: Any) -> dict[str, Any]:
    return {'generator': self.generator.init(params['generator']),
            'discriminator': self.discriminator.init(params['discriminator'])}


def network_optimizer_config(opt: 'ml_collections.ConfigDict',
                             network: str) -> dict[str, Any]:
  """config.optimizer with `optimizer.<network>`'s overrides applied, for
  `make_optimizer` (which takes any mapping)."""
  shared = {k: v for k, v in opt.items() if k not in NETWORKS}
  overrides = dict(opt.get(network) or {})
  allowed = set(shared) | set(OPTIONAL_FIELDS)
  unknown = sorted(set(overrides) - allowed)
  if unknown:
    raise ConfigError(f'optimizer.{network} cannot set {", ".join(unknown)}; '
                      f'it may override {", ".join(sorted(allowed))}')
  return {**shared, **overrides}


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
  """The model and params (host numpy arrays) of the classification run in
  `workdir`: its config.json and latest checkpoint. `example` [1, ...] is an
  input of the GAN's data, to check that the classifier takes it."""
  if not workdir:
    raise ConfigError('gan.quality "classifier" needs gan.classifier_workdir, '
                      'the workdir of a classifier trained on the same data; '
                      'train one with '
                      f'`{_TRAIN_CLASSIFIER.format("/tmp/bigml/default")}` '
                      'and pass --config.gan.classifier_workdir='
                      '/tmp/bigml/default')
  directory = os.path.join(os.path.expanduser(workdir), 'checkpoints')
  step = None
  if os.path.isdir(directory):
    with ocp.CheckpointManager(directory) as manager:
      step = manager.latest_step()
  if step is None:
    raise ConfigError(
        f'gan.classifier_workdir {workdir} holds no checkpoint; train a '
        f'classifier there first: `{_TRAIN_CLASSIFIER.format(workdir)}`')
  from bigml_jax.config import load_saved_config  # pylint: disable=g-import-not-at-top
  model = build_model(load_saved_config(workdir).model,
                      num_classes=num_classes)
  abstract = nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), example))['params'])
  # Only the params, as numpy: the checkpoint's optimizer state and device
  # layout are the classifier run's business, not this one's.
  as_numpy = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  with ocp.CheckpointManager(directory) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item={'params': abstract},
                                     restore_args={'params': as_numpy},
                                     partial_restore=True)))
  params = restored.state['params']
  if jax.tree.map(np.shape, params) != jax.tree.map(np.shape, abstract):
    raise ConfigError(f'the classifier in {workdir} does not fit this '
                      "dataset's inputs or classes; train it on the GAN's "
                      'dataset')
  return model, params


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


def _scatter_image(points: jax.Array, extent: float, marks: np.ndarray,
                   size: int = 128) -> jax.Array:
  """2-D points [N, 2] in [-extent, extent]^2 -> one RGB image [1, S, S, 3]:
  white dots, brighter where points pile up (a collapsed generator shows as
  a few bright spots), with `marks` [M, 2] (e.g. the true modes) in red."""

  def pixels(p):
    ij = jnp.floor((p + extent) / (2 * extent) * size).astype(jnp.int32)
    return size - 1 - ij[:, 1], ij[:, 0]  # row 0 is the top: y points up.

  rows, cols = pixels(points)
  density = jnp.zeros((size, size)).at[rows, cols].add(0.25, mode='drop')
  density = jnp.clip(density, 0.0, 1.0)
  mark_rows, mark_cols = pixels(jnp.asarray(marks, jnp.float32).reshape(-1, 2))
  red = jnp.zeros((size, size)).at[mark_rows, mark_cols].set(1.0, mode='drop')
  image = jnp.stack([jnp.maximum(density, red), density * (1 - red),
                     density * (1 - red)], axis=-1)
  return image[None]


@dataclasses.dataclass(frozen=True)
class GanTask:
  """Generator `generator(z) -> samples` against `discriminator(x) -> logit`.

  Batches hold real samples under `input_key` ([B, H, W, C] images or [B, 2]
  points) and, in eval, 'mask' [B]. Params are {'generator', 'discriminator'}
  plus 'generator_ema' when ema_decay > 0 (averaged, never trained).
  """
  generator: nn.Module
  discriminator: nn.Module
  loss: str = 'non_saturating'
  n_critic: int = 1
  r1_gamma: float = 0.0
  ema_decay: float = 0.0
  num_samples: int = 64
  plot_extent: float = 3.0
  quality: str = 'none'
  ring_modes: int = 8
  ring_radius: float = 2.0
  ring_sigma: float = 0.02
  input_key: str = 'image'
  classifier: nn.Module | None = None
  classifier_params: Any = dataclasses.field(default=None, compare=False)

  @classmethod
  def from_config(cls, config, *, num_classes: int, **other_data_fields
                  ) -> 'GanTask':
    """`num_classes` is the ring's number of modes (its labels) and the
    quality classifier's output size; other data fields are not used."""
    del other_data_fields
    model = config.model
    if 'generator' not in model or 'discriminator' not in model:
      raise ConfigError('task "gan" needs config.model.generator and '
                        'config.model.discriminator, each with a name (e.g. '
                        'mlp_generator, dcgan_discriminator) and its '
                        'hyperparameters')
    # Loop options that only the default train step implements.
    supported = {'parallelism': ('jit', None), 'microbatches': (1, None),
                 'compute_dtype': (None, 'float32')}
    for field, values in supported.items():
      if config.get(field, values[0]) not in values:
        raise ConfigError(f'task "gan" has its own train step, which does '
                          f'not implement {field}={config.get(field)!r}; '
                          'remove it from the config')
    gan = config.get('gan') or {}
    task = cls(build_model(model.generator), build_model(model.discriminator),
               loss=gan.get('loss', 'non_saturating'),
               n_critic=gan.get('n_critic', 1),
               r1_gamma=gan.get('r1_gamma', 0.0),
               ema_decay=gan.get('ema_decay', 0.0),
               num_samples=gan.get('num_samples', 64),
               plot_extent=gan.get('plot_extent', 3.0),
               quality=gan.get('quality', 'none'),
               ring_modes=num_classes,
               ring_radius=gan.get('ring_radius', 2.0),
               ring_sigma=gan.get('ring_sigma', 0.02),
               input_key=config.dataset.get('input_key', 'image'))
    task.check()
    if task.quality == 'classifier':
      example = np.zeros((1, *task.generator.output_shape), np.float32)
      classifier, params = load_classifier(gan.get('classifier_workdir'),
                                           num_classes, example)
      task = dataclasses.replace(task, classifier=classifier,
                                 classifier_params=params)
    return task

  def check(self) -> None:
    """Raises ConfigError for settings no run can use."""
    if self.loss not in LOSSES:
      raise ConfigError(f'gan.loss {self.loss!r} is unknown; use one of '
                        f'{", ".join(LOSSES)}')
    if self.quality not in QUALITY:
      raise ConfigError(f'gan.quality {self.quality!r} is unknown; use one of '
                        f'{", ".join(QUALITY)}')
    if self.quality == 'ring' and tuple(self.generator.output_shape) != (2,):
      raise ConfigError('gan.quality "ring" scores 2-D points, but the '
                        'generator makes samples of shape '
                        f'{tuple(self.generator.output_shape)}; use '
                        'gan.quality "none" or "classifier" for this data')
    if not isinstance(self.n_critic, int) or self.n_critic < 1:
      raise ConfigError(f'gan.n_critic must be a positive integer, got '
                        f'{self.n_critic!r}')
    if self.r1_gamma < 0:
      raise ConfigError(f'gan.r1_gamma must be >= 0 (0 = off), got '
                        f'{self.r1_gamma}')
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(f'gan.ema_decay must be in [0, 1) (0 = no EMA), got '
                        f'{self.ema_decay}')

  # Networks

  @property
  def latent_dim(self) -> int:
    return self.generator.latent_dim

  def noise(self, rng: jax.Array, n: int) -> jax.Array:
    """z ~ N(0, I), [n, latent_dim]."""
    return jax.random.normal(rng, (n, self.latent_dim))

  def generate(self, g_params: Any, z: jax.Array) -> jax.Array:
    return self.generator.apply({'params': g_params}, z)

  def discriminate(self, d_params: Any, x: jax.Array) -> jax.Array:
    return self.discriminator.apply({'params': d_params}, x)

  def init(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
    """{'generator', 'discriminator'[, 'generator_ema']}, boxed with logical
    axis names."""
    real = batch[self.input_key]
    g_rng, d_rng = jax.random.split(rng)
    if tuple(self.generator.output_shape) != tuple(real.shape[1:]):
      raise ConfigError(
          f'model.generator.output_shape {tuple(self.generator.output_shape)} '
          f'does not match the data, whose samples have shape '
          f'{tuple(real.shape[1:])}; set it to that')
    params = {
        'generator': self.generator.init(
            g_rng, jnp.zeros((1, self.latent_dim)))['params'],
        'discriminator': self.discriminator.init(d_rng, real)['params'],
    }
    if self.ema_decay:
      params['generator_ema'] = jax.tree.map(jnp.copy, params['generator'])
    return params

  # Losses, per example

  def d_losses(self, real_logits: jax.Array, fake_logits: jax.Array
               ) -> jax.Array:
    """D's loss on each (real, fake) pair, [B]."""
    if self.loss == 'hinge':
      return nn.relu(1.0 - real_logits) + nn.relu(1.0 + fake_logits)
    # -log sigmoid(real) - log(1 - sigmoid(fake)), written stably.
    return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)

  def g_losses(self, fake_logits: jax.Array) -> jax.Array:
    """G's loss on each fake, [B]: -log D(G(z)) (non-saturating) or -D(G(z))."""
    if self.loss == 'hinge':
      return -fake_logits
    return jax.nn.softplus(-fake_logits)

  def _d_metrics(self, real_logits, fake_logits, mask) -> Metrics:
    losses = self.d_losses(real_logits, fake_logits)
    return {'d_loss_sum': (losses * mask).sum(),
            'real_correct': ((real_logits > 0) * mask).sum(),
            'fake_correct': ((fake_logits < 0) * mask).sum(),
            'count': mask.sum()}

  def r1_penalty(self, d_params: Any, real: jax.Array) -> jax.Array:
    """E ||d D(x) / dx||^2 over real x (Mescheder et al., 2018, eq. 9):
    keeps D flat on the data, which makes the game converge."""
    grad = jax.grad(lambda x: self.discriminate(d_params, x).sum())(real)
    return (grad.reshape(grad.shape[0], -1) ** 2).sum(axis=1).mean()

  # The two phases of a train step

  def discriminator_update(self, tx: GanOptimizers, params: Any,
                           opt_state: Any, real: jax.Array, rng: jax.Array
                           ) -> tuple[Any, Any, Metrics]:
    """One D step on `real` [B, ...] against B fresh fakes; G is untouched.

    Returns (params, opt_state, metric sums of this step).
    """
    fake = self.generate(params['generator'], self.noise(rng, real.shape[0]))
    mask = jnp.ones(real.shape[:1], jnp.float32)

    def loss_fn(d_params):
      real_logits = self.discriminate(d_params, real)
      fake_logits = self.discriminate(d_params, fake)
      loss = self.d_losses(real_logits, fake_logits).mean()
      if self.r1_gamma:
        loss += self.r1_gamma / 2 * self.r1_penalty(d_params, real)
      return loss, (real_logits, fake_logits)

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params['discriminator'])
    updates, d_opt = tx.discriminator.update(
        grads, opt_state['discriminator'], params['discriminator'])
    params = dict(params, discriminator=optax.apply_updates(
        params['discriminator'], updates))
    metrics = dict(self._d_metrics(*logits, mask),
                   d_grad_norm_sum=optax.tree.norm(grads))
    return params, dict(opt_state, discriminator=d_opt), metrics

  def generator_update(self, tx: GanOptimizers, params: Any, opt_state: Any,
                       batch_size: int, rng: jax.Array
                       ) -> tuple[Any, Any, Metrics]:
    """One G step on `batch_size` fresh fakes, through D; D is untouched.

    Also moves 'generator_ema' (when present) toward the new G.
    """
    z = self.noise(rng, batch_size)

    def loss_fn(g_params):
      fake_logits = self.discriminate(params['discriminator'],
                                      self.generate(g_params, z))
      losses = self.g_losses(fake_logits)
      return losses.mean(), losses

    (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params['generator'])
    updates, g_opt = tx.generator.update(
        grads, opt_state['generator'], params['generator'])
    generator = optax.apply_updates(params['generator'], updates)
    params = dict(params, generator=generator)
    if 'generator_ema' in params:
      params['generator_ema'] = optax.incremental_update(
          generator, params['generator_ema'], step_size=1.0 - self.ema_decay)
    metrics = {'g_loss_sum': losses.sum(),
               'g_grad_norm_sum': optax.tree.norm(grads)}
    return params, dict(opt_state, generator=g_opt), metrics

  def make_optimizer(self, config) -> tuple[GanOptimizers, optax.Schedule]:
    """Each network's optimizer from config.optimizer and its overrides.

    D's schedule runs over n_critic * total_steps of its own updates. The
    schedule returned (for the logged learning rate) is G's.
    """
    g_tx, g_schedule = make_optimizer(
        network_optimizer_config(config.optimizer, 'generator'),
        config.total_steps)
    d_tx, _ = make_optimizer(
        network_optimizer_config(config.optimizer, 'discriminator'),
        config.total_steps * self.n_critic)
    return GanOptimizers(generator=g_tx, discriminator=d_tx), g_schedule

  def make_train_step(self, tx: GanOptimizers):
    """train_step(state, batch) -> (state, metric sums): n_critic D updates
    on the batch (fresh fakes each), then one G update."""

    def train_step(state, batch):
      rng = jax.random.fold_in(state.rng, state.step)
      real = batch[self.input_key]
      params, opt_state = state.params, state.opt_state
      for i in range(self.n_critic):
        params, opt_state, d_metrics = self.discriminator_update(
            tx, params, opt_state, real, jax.random.fold_in(rng, i))
      params, opt_state, g_metrics = self.generator_update(
          tx, params, opt_state, real.shape[0],
          jax.random.fold_in(rng, self.n_critic))
      # D's metrics are those of its last update: the D that G then faced.
      metrics = dict(d_metrics, **g_metrics)
      grad_norm = jnp.sqrt(metrics['d_grad_norm_sum'] ** 2 +
                           metrics['g_grad_norm_sum'] ** 2)
      # As in the default step: a non-finite loss, gradient or parameter
      # skips the whole step (both networks) and is counted for the loop.
      finite = (jnp.isfinite(grad_norm) &
                jnp.isfinite(metrics['d_loss_sum'] + metrics['g_loss_sum']) &
                jnp.isfinite(optax.tree.norm(params)))
      keep = lambda new, old: jax.tree.map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      metrics.update(
          grad_norm_sum=jnp.where(finite, grad_norm, 0.0),
          steps=jnp.ones((), jnp.float32),
          nonfinite=(~finite).astype(jnp.float32),
          min_nonfinite_step=jnp.where(finite, NO_STEP, state.step + 1))
      return state.replace(step=state.step + 1,
                           params=keep(params, state.params),
                           opt_state=keep(opt_state, state.opt_state)), metrics

    return train_step

  # Evaluation

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, Metrics]:
    """D's mean loss on the batch's real samples against as many fakes, and
    metric sums: D/G losses, D's accuracy, and sample quality.

    Returns:
      loss: scalar, D's mean loss over examples with mask 1.
      metrics: sums over those examples (see summarize()).
    """
    del train  # No dropout or batch statistics in these networks.
    real = batch[self.input_key]
    mask = batch.get('mask', jnp.ones(real.shape[:1], jnp.float32))
    # The eval step passes one rng for every batch; keying the noise on the
    # batch's bits too gives each batch its own fakes, still deterministic
    # (an integer sum is exact in any order, on any mesh).
    bits = jax.lax.bitcast_convert_type(real, jnp.uint32)
    rng = jax.random.fold_in(rng, jnp.sum(bits, dtype=jnp.uint32))
    z = self.noise(rng, real.shape[0])
    fake = self.generate(params['generator'], z)
    fake_logits = self.discriminate(params['discriminator'], fake)
    metrics = self._d_metrics(
        self.discriminate(params['discriminator'], real), fake_logits, mask)
    metrics['g_loss_sum'] = (self.g_losses(fake_logits) * mask).sum()
    # Quality is that of the generator samples() draws from.
    if 'generator_ema' in params:
      fake = self.generate(params['generator_ema'], z)
    if self.quality == 'ring':
      metrics.update(self.ring_sums(fake, mask))
    elif self.quality == 'classifier':
      metrics.update(self._classifier_sums(real, fake, mask))
    return metrics['d_loss_sum'] / jnp.maximum(metrics['count'], 1.0), metrics

  def ring_centers(self) -> np.ndarray:
    """[ring_modes, 2]: mode k at angle 2*pi*k/ring_modes (as the dataset)."""
    angles = 2 * np.pi * np.arange(self.ring_modes) / self.ring_modes
    return self.ring_radius * np.stack([np.cos(angles), np.sin(angles)], -1)

  def ring_sums(self, fake: jax.Array, mask: jax.Array) -> Metrics:
    centers = self.ring_centers()
    dist = jnp.linalg.norm(fake[:, None, :] - centers[None], axis=-1)
    good = (dist.min(axis=1) <= 3 * self.ring_sigma) * mask
    nearest = jax.nn.one_hot(dist.argmin(axis=1), self.ring_modes)
    return {'high_quality': good.sum(),
            'mode_counts': (nearest * good[:, None]).sum(axis=0)}

  def _classifier_sums(self, real: jax.Array, fake: jax.Array,
                       mask: jax.Array) -> Metrics:
    sums = {}
    for name, x in (('real', real), ('fake', fake)):
      features, logits = _penultimate_features(
          self.classifier, self.classifier_params, x)
      f = features.astype(jnp.float32) * mask[:, None]
      sums[f'{name}_feature_sum'] = f.sum(axis=0)
      sums[f'{name}_feature_outer'] = f.T @ f
      sums[f'{name}_confidence'] = (
          jax.nn.softmax(logits.astype(jnp.float32)).max(axis=-1) * mask).sum()
    return sums

  def summarize(self, sums: dict[str, Any]) -> dict[str, float]:
    """Metric sums (over steps or eval batches) -> means.

    'loss' is D's loss and 'accuracy' D's accuracy on real and fake samples
    together (0.5: it cannot tell them apart); both are what the loop prints.
    """
    count = max(float(sums['count']), 1.0)
    out = {'loss': sums['d_loss_sum'] / count,
           'd_loss': sums['d_loss_sum'] / count,
           'g_loss': sums['g_loss_sum'] / count,
           'accuracy': (sums['real_correct'] + sums['fake_correct'])
                       / (2 * count),
           'd_real_accuracy': sums['real_correct'] / count,
           'd_fake_accuracy': sums['fake_correct'] / count}
    if 'steps' in sums:
      out['d_grad_norm'] = sums['d_grad_norm_sum'] / sums['steps']
      out['g_grad_norm'] = sums['g_grad_norm_sum'] / sums['steps']
    if 'mode_counts' in sums:
      fair_share = count / self.ring_modes
      out['modes_covered'] = float(
          (np.asarray(sums['mode_counts']) >= _MODE_COVERED_SHARE * fair_share)
          .sum())
      out['high_quality_share'] = sums['high_quality'] / count
    if 'fake_feature_sum' in sums:
      stats = [_mean_and_cov(np.asarray(sums[f'{n}_feature_sum'], np.float64),
                             np.asarray(sums[f'{n}_feature_outer'], np.float64),
                             count) for n in ('real', 'fake')]
      out['fid'] = frechet_distance(*stats[0], *stats[1])
      out['confidence'] = sums['fake_confidence'] / count
      out['confidence_real'] = sums['real_confidence'] / count
    return {k: float(v) for k, v in out.items()}

  # Pictures

  def samples(self, params: Any, rng: jax.Array) -> jax.Array:
    """num_samples from G (its EMA when on): images [N, H, W, C] in [0, 1],
    or, for 2-D points, one scatter plot [1, 128, 128, 3] with the ring's
    modes (quality 'ring') in red."""
    g_params = params.get('generator_ema', params['generator'])
    x = self.generate(g_params, self.noise(rng, self.num_samples))
    if x.ndim == 2:
      marks = (self.ring_centers() if self.quality == 'ring'
               else np.zeros((0, 2)))
      return _scatter_image(x, self.plot_extent, marks)
    return x
