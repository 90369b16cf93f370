"""GAN on the 8-Gaussian ring (`gaussian_ring`): MLP generator and critic.

The mode-collapse benchmark of Metz et al. (2017): 8 Gaussians, sigma 0.02,
on a circle of radius 2. Each eval reports modes_covered (of 8) and
high_quality_share (samples within 3 sigma of a mode) on 5,000 generated
points, and writes a scatter plot of 2,000 samples (modes in red) to
samples_STEP.png and TensorBoard.

  python -m experiments.run --config=experiments/configs/gan_ring.py \
      --workdir=/tmp/bigml/gan_ring

Result: RESULT_TBD
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = 'gan'

  config.model = ml_collections.ConfigDict()
  config.model.name = 'gan'
  config.model.generator = ml_collections.ConfigDict({
      'name': 'mlp_generator', 'output_shape': (2,), 'latent_dim': 2,
      'features': (256, 256, 256)})
  config.model.discriminator = ml_collections.ConfigDict({
      'name': 'mlp_discriminator', 'features': (256, 256, 256)})

  config.gan = ml_collections.ConfigDict()
  config.gan.loss = 'non_saturating'
  config.gan.n_critic = 1
  config.gan.r1_gamma = 0.1
  config.gan.ema_decay = 0.0
  config.gan.num_samples = 2000
  config.gan.plot_extent = 3.0
  config.gan.quality = 'ring'
  config.gan.ring_radius = 2.0
  config.gan.ring_sigma = 0.02

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'gaussian_ring'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'
  # None: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)

  config.batch_size = 256
  config.total_steps = 2000
  config.log_every = 250
  config.eval_every = 500
  config.checkpoint_every = 1000
  config.max_to_keep = 2

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = 'cosine'
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  # Per-network overrides of any optimizer field above.
  config.optimizer.generator = ml_collections.ConfigDict(
      {'learning_rate': 2e-3})
  config.optimizer.discriminator = ml_collections.ConfigDict(
      {'learning_rate': 2e-3})

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1
  return config
