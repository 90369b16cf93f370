"""Pieces every experiment config shares; each config file stays the one
place to read its experiment (big_vision-style), minus this boilerplate."""

import ml_collections

from bigml_jax import config as config_lib


def base(*, batch_size: int, total_steps: int, log_every: int = 100,
         eval_every: int | None = None,
         checkpoint_every: int | None = None) -> ml_collections.ConfigDict:
  """Every optional field at its default (bigml_jax.config.FIELDS: so that
  `--config.KEY=VALUE` can set it), and the run-level fields: seed, the
  schedule of logs, evals and checkpoints, a data-parallel mesh over all
  devices."""
  config = config_lib.defaults()
  config.seed = 0
  config.batch_size = batch_size
  config.total_steps = total_steps
  config.log_every = log_every
  config.eval_every = eval_every or total_steps // 4
  config.checkpoint_every = checkpoint_every or total_steps // 2
  config.max_to_keep = 2
  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'tensor': 1})
  return config


def dataset(name: str, **fields) -> ml_collections.ConfigDict:
  """A dataset section; data_dir None means $TFDS_DATA_DIR, else
  ~/tensorflow_datasets."""
  cfg = ml_collections.ConfigDict({'name': name, 'train_split': 'train',
                                   'eval_split': 'test', **fields})
  cfg.data_dir = ml_collections.config_dict.placeholder(str)
  if 'tokenizer' in fields and 'vocab_size' not in fields:
    # So that `--config.dataset.tokenizer=subword` can be given its size.
    cfg.vocab_size = ml_collections.config_dict.placeholder(int)
  return cfg


def optimizer(name: str, learning_rate: float, *, schedule: str = 'cosine',
              warmup_steps: int = 0, weight_decay: float = 0.0,
              grad_clip_norm: float = 0.0, **extra) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      'name': name, 'learning_rate': learning_rate, 'schedule': schedule,
      'warmup_steps': warmup_steps, 'weight_decay': weight_decay,
      'grad_clip_norm': grad_clip_norm, **extra})
