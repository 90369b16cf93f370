"""DCGAN on `digits` (real 8x8 handwritten digits), scored by a trained CNN.

Generator: dense -> 2x2x64 -> transposed convs -> 4x4x32 -> 8x8x1 (sigmoid);
discriminator: stride-2 convs 32, 64 -> logit. Each eval writes a grid of 64
samples (from the generator's EMA) to samples_STEP.png and TensorBoard and
reports fid, the Frechet distance between the 360 test digits and as many
samples in the 128-d penultimate features of the default CNN, and
confidence, that CNN's mean top-class probability on the samples. First
train the CNN (about 15 s), then the GAN:

  python -m experiments.run --config=experiments/configs/default.py \
      --workdir=/tmp/bigml/default
  python -m experiments.run --config=experiments/configs/gan_digits.py \
      --workdir=/tmp/bigml/gan_digits

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
      'name': 'dcgan_generator', 'output_shape': (8, 8, 1), 'latent_dim': 32,
      'channels': (64, 32)})
  config.model.discriminator = ml_collections.ConfigDict({
      'name': 'dcgan_discriminator', 'channels': (32, 64)})

  config.gan = ml_collections.ConfigDict()
  config.gan.loss = 'non_saturating'
  config.gan.n_critic = 1
  config.gan.r1_gamma = 1.0
  config.gan.ema_decay = 0.999
  config.gan.num_samples = 64
  config.gan.quality = 'classifier'
  # The workdir of the default CNN run above.
  config.gan.classifier_workdir = '/tmp/bigml/default'

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'
  # None: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)

  config.batch_size = 64
  config.total_steps = 4000
  config.log_every = 500
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.max_to_keep = 2

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip_norm = 0.0
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  # Per-network overrides of any optimizer field above.
  config.optimizer.generator = ml_collections.ConfigDict(
      {'learning_rate': 5e-4})
  config.optimizer.discriminator = ml_collections.ConfigDict(
      {'learning_rate': 5e-4})

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1
  return config
