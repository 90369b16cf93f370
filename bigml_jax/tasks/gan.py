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

Metrics: D's and G's losses, D's accuracy on real and on generated samples.
Sample quality is the evaluators' (bigml_jax.evaluators.gan), chosen by
gan.quality: 'ring' -> ring_coverage, 'classifier' -> frechet_distance (with
gan.classifier_workdir), or by config.evals.
"""

import dataclasses
from typing import Any, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

from bigml_jax.errors import ConfigError, check_choice
from bigml_jax.models import build_model
from bigml_jax.optim import OPTIONAL_FIELDS, make_optimizer
from bigml_jax.tasks.base import Task, guarded_update

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

LOSSES = ('non_saturating', 'hinge')
QUALITY = ('none', 'ring', 'classifier')
NETWORKS = ('generator', 'discriminator')


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
class GanTask(Task):
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
    options = dict(config.get('gan') or {})
    options.pop('classifier_workdir', None)  # The evaluator's (evaluators).
    fields = {f.name for f in dataclasses.fields(cls)} - {
        'generator', 'discriminator', 'ring_modes', 'input_key'}
    unknown = sorted(set(options) - fields)
    if unknown:
      raise ConfigError(f'gan has no field(s) {", ".join(unknown)}; its '
                        f'fields are {", ".join(sorted(fields))}, '
                        'classifier_workdir')
    task = cls(build_model(model.generator), build_model(model.discriminator),
               ring_modes=num_classes,
               input_key=config.dataset.get('input_key') or 'image', **options)
    task.check()
    return task

  def evaluators(self, config) -> dict[str, dict[str, Any]]:
    """Sample quality by gan.quality (bigml_jax.evaluators.gan)."""
    if self.quality == 'ring':
      return {'ring_coverage': {}}
    if self.quality == 'classifier':
      return {'frechet_distance': {'classifier_workdir': (
          config.get('gan') or {}).get('classifier_workdir')}}
    return {}

  def check(self) -> None:
    """Raises ConfigError for settings no run can use."""
    check_choice('gan.loss', self.loss, LOSSES)
    check_choice('gan.quality', self.quality, QUALITY)
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
      # Both networks' update is skipped together, as the default step's.
      return guarded_update(state, params, opt_state, grad_norm, metrics,
                            metrics['d_loss_sum'] + metrics['g_loss_sum'])

    return train_step

  # Evaluation

  def loss_and_metrics(self, params: Any, batch: Batch, rng: jax.Array,
                       train: bool) -> tuple[jax.Array, Metrics]:
    """D's mean loss on the batch's real samples against as many fakes, and
    metric sums: D/G losses and D's accuracy.

    Returns:
      loss: scalar, D's mean loss over examples with mask 1.
      metrics: sums over those examples (see summarize()).
    """
    del train  # No dropout or batch statistics in these networks.
    real = batch[self.input_key]
    mask = batch.get('mask', jnp.ones(real.shape[:1], jnp.float32))
    fake = self.generate(params['generator'], self._eval_noise(real, rng))
    fake_logits = self.discriminate(params['discriminator'], fake)
    metrics = self._d_metrics(
        self.discriminate(params['discriminator'], real), fake_logits, mask)
    metrics['g_loss_sum'] = (self.g_losses(fake_logits) * mask).sum()
    return metrics['d_loss_sum'] / jnp.maximum(metrics['count'], 1.0), metrics

  def _eval_noise(self, real: jax.Array, rng: jax.Array) -> jax.Array:
    # The eval step passes one rng for every batch; keying the noise on the
    # batch's bits too gives each batch its own fakes, still deterministic
    # (an integer sum is exact in any order, on any mesh).
    bits = jax.lax.bitcast_convert_type(real, jnp.uint32)
    rng = jax.random.fold_in(rng, jnp.sum(bits, dtype=jnp.uint32))
    return self.noise(rng, real.shape[0])

  def eval_samples(self, params: Any, batch: Batch, rng: jax.Array
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(real [B, ...], fake [B, ...], mask [B]) of an eval batch: the fakes
    of the generator samples() draws from (its EMA when on), from the noise
    the eval metrics use, for the quality evaluators."""
    real = batch[self.input_key]
    mask = batch.get('mask', jnp.ones(real.shape[:1], jnp.float32))
    g_params = params.get('generator_ema', params['generator'])
    return real, self.generate(g_params, self._eval_noise(real, rng)), mask

  def ring_centers(self) -> np.ndarray:
    """[ring_modes, 2]: mode k at angle 2*pi*k/ring_modes (as the dataset)."""
    angles = 2 * np.pi * np.arange(self.ring_modes) / self.ring_modes
    return self.ring_radius * np.stack([np.cos(angles), np.sin(angles)], -1)

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
