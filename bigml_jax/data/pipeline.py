"""Input pipelines: TFDS array_record sources read with grain, per process.

Train: indices -> shuffle(seed, reshuffled each epoch) -> repeat -> batch
(local batch size) -> this process's slice -> read + preprocess -> iterator. Local batch k*P + p
holds the examples of global batch k that process p feeds, so the global batch
at every step is the same whatever the number of processes, and the
iterator's `get_state()` (saved in checkpoints) is just a position.

Eval: the whole split once, in order, padded to full global batches; `mask`
is 1 for real examples and 0 for padding, so each example counts exactly once.

No TensorFlow at run time: `tfds.data_source` reads array_record files with
the `array_record` package. Catalog datasets (e.g. `mnist`) are used only when
already prepared on disk: checking the directory first means nothing ever
tries the network.
"""

import dataclasses
import glob
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.config import ConfigError
from bigml_jax.data.builders import BUILDERS

Batch = dict[str, np.ndarray]
DEFAULT_DATA_DIR = os.environ.get('TFDS_DATA_DIR',
                                  os.path.join('~', 'tensorflow_datasets'))


@dataclasses.dataclass(frozen=True)
class SyntheticSource(Sequence):
  """Random-access source of Gaussian images with random labels.

  Example i is a pure function of (seed, i): for benchmarks and tests of
  arbitrary shapes, not for learning anything.
  """
  num_examples: int
  shape: tuple[int, ...]
  num_classes: int
  seed: int = 0

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    rng = np.random.default_rng((self.seed, index))
    return {'image': rng.standard_normal(self.shape, dtype=np.float32),
            'label': np.int64(rng.integers(self.num_classes))}


@dataclasses.dataclass(frozen=True)
class Sources:
  """The splits of one dataset and what the model needs to know about it."""
  train: Sequence[Any]
  eval: Sequence[Any]
  num_classes: int


def _prepared_version_dir(data_dir: str, name: str) -> str | None:
  infos = sorted(glob.glob(os.path.join(data_dir, name, '*', 'dataset_info.json')))
  return os.path.dirname(infos[-1]) if infos else None


def _tfds_sources(cfg: ml_collections.ConfigDict) -> Sources:
  data_dir = os.path.expanduser(cfg.get('data_dir') or DEFAULT_DATA_DIR)
  name = cfg.name
  if name in BUILDERS:
    builder = BUILDERS[name](data_dir=data_dir, file_format='array_record')
    # Offline builders prepare in well under a second; TFDS writes to a
    # temporary directory and renames it, so a crash leaves no half dataset.
    if not builder.is_prepared():
      builder.download_and_prepare()
    source = builder.as_data_source()
    features = builder.info.features
  else:
    if _prepared_version_dir(data_dir, name) is None:
      raise ConfigError(
          f'dataset {name!r} is not prepared under {data_dir}; offline '
          f'datasets: {", ".join(sorted(BUILDERS))}, synthetic. For a TFDS '
          f'catalog dataset run `tfds build {name} --data_dir={data_dir}` '
          'where there is network (needs tensorflow), or set '
          'dataset.data_dir to where it is prepared')
    source = tfds.data_source(name, data_dir=data_dir, download=False)
    features = source[cfg.train_split].dataset_info.features
  for split in (cfg.train_split, cfg.eval_split):
    if split not in source:
      raise ConfigError(f'dataset {name!r} has no split {split!r}; its '
                        f'splits: {", ".join(sorted(source))}')
  label = features[cfg.get('label_key', 'label')]
  return Sources(source[cfg.train_split], source[cfg.eval_split],
                 label.num_classes)


def load_sources(cfg: ml_collections.ConfigDict) -> Sources:
  """Returns the train and eval sources named by `config.dataset`."""
  if cfg.name == 'synthetic':
    make = lambda n, seed: SyntheticSource(n, tuple(cfg.shape), cfg.num_classes,
                                           seed)
    return Sources(make(cfg.num_train, 0), make(cfg.num_eval, 1),
                   cfg.num_classes)
  try:
    return _tfds_sources(cfg)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'dataset.name {cfg.name!r} is unknown; offline datasets: '
        f'{", ".join(sorted(BUILDERS))}, synthetic, or a prepared TFDS '
        'catalog name') from None


def make_preprocess(cfg: ml_collections.ConfigDict):
  """Maps raw examples to {'image': float32, 'label': int32}.

  Works on one example ([H, W, C] image) or a stacked batch ([B, H, W, C]):
  batches are preprocessed whole, which is far cheaper than per example.
  """
  image_key = cfg.get('image_key', 'image')
  label_key = cfg.get('label_key', 'label')

  def preprocess(example: dict[str, Any]) -> Batch:
    image = np.asarray(example[image_key])
    if np.issubdtype(image.dtype, np.integer):
      image = image.astype(np.float32) / 255.0
    return {'image': image.astype(np.float32),
            'label': np.asarray(example[label_key], np.int32)}

  return preprocess


def _read_batch(source: Sequence[Any], preprocess,
                indices: Sequence[int]) -> Batch:
  indices = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    records = source.__getitems__(indices)
  else:
    records = [source[i] for i in indices]
  return preprocess({k: np.stack([np.asarray(r[k]) for r in records])
                     for k in records[0]})


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ConfigError(f'batch_size {global_batch_size} is not divisible by '
                      f'{process_count} processes; use a multiple of '
                      f'{process_count}')
  return global_batch_size // process_count


def train_iterator(source: Sequence[Any], preprocess, *, seed: int,
                   global_batch_size: int, process_index: int = 0,
                   process_count: int = 1,
                   num_threads: int = 2) -> grain.DatasetIterator:
  """An endless iterator of this process's slice of each global train batch.

  Yields dicts of numpy arrays with leading dim global_batch_size //
  process_count. Checkpoint it with `get_state()` / `set_state()`.
  """
  local = _local_batch_size(global_batch_size, process_count)
  # The grain graph works on indices; records are read a batch at a time,
  # which ArrayRecord does several times faster than one by one.
  ds = (grain.MapDataset.range(len(source))
        .shuffle(seed=seed)
        .repeat()
        .batch(local, drop_remainder=True))
  ds = ds[process_index::process_count].map(
      lambda indices: _read_batch(source, preprocess, indices))
  read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
  return iter(ds.to_iter_dataset(read))


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return math.ceil(num_examples / global_batch_size)


def eval_batches(source: Sequence[Any], preprocess, *, global_batch_size: int,
                 process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """This process's slices of the eval split's global batches, with `mask`.

  Every process yields the same number of batches (padding past the end of
  the split), which keeps collectives in step across hosts.
  """
  local = _local_batch_size(global_batch_size, process_count)
  n = len(source)
  for b in range(num_eval_batches(n, global_batch_size)):
    start = min(b * global_batch_size + process_index * local, n)
    stop = min(start + local, n)
    # A process past the end still reads one record, as a shape template.
    batch = _read_batch(source, preprocess, range(start, stop) or [0])
    real = stop - start
    batch = {k: np.concatenate([v[:real], np.zeros_like(v[:1]).repeat(
        local - real, axis=0)]) for k, v in batch.items()}
    batch['mask'] = (np.arange(local) < real).astype(np.float32)
    yield batch
