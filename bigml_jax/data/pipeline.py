"""Input pipelines: TFDS array_record sources read with grain, per process.

Train: indices -> shuffle(seed, reshuffled each epoch) -> repeat -> batch
(local batch size) -> this process's slice -> read + preprocess -> iterator
(grain's for records; for splits small enough to be decoded into memory,
`ArrayBatches`, which yields the same batches without grain's per-batch
bookkeeping). Local batch k*P + p
holds the examples of global batch k that process p feeds, so the global batch
at every step is the same whatever the number of processes, and the
iterator's `get_state()` (saved in checkpoints) is just a position.

Eval: the whole split once, in order, padded to full global batches; `mask`
is 1 for real examples and 0 for padding, so each example counts exactly once.

Text datasets (a `text` feature) are tokenized once at load, with a tokenizer
trained on the train split (or read back from the run's workdir), and the
sources then hold token ids, so both pipelines above serve them unchanged:
  with a label: {'tokens': int32 [max_length], padded with PAD_ID 0, 'label'};
  without (LM): {'tokens': int32 [max_length + 1]}, consecutive windows of one
    stream of the split's documents, `EOS doc EOS doc ... EOS`.

No TensorFlow at run time: `tfds.data_source` reads array_record files with
the `array_record` package. Catalog datasets (e.g. `mnist`) are used only when
already prepared on disk: checking the directory first means nothing ever
tries the network.
"""

import dataclasses
import functools
import glob
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from absl import logging
from etils import epath
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.config import ConfigError
from bigml_jax.data import text as text_lib
from bigml_jax.data.index_shuffle import index_shuffle
from bigml_jax.data.builders import BUILDERS

Batch = dict[str, np.ndarray]
TOKENS_KEY = 'tokens'
TOKENIZER_FILE = 'tokenizer.json'
DEFAULT_MAX_LENGTH = 256
MAX_IN_MEMORY_BYTES = 256 << 20  # Splits up to this size are decoded once.
DEFAULT_DATA_DIR = os.environ.get('TFDS_DATA_DIR',
                                  os.path.join('~', 'tensorflow_datasets'))


class ArraySource(Sequence):
  """A split held in memory, one array per feature: a batch read is one
  index per feature instead of decoding each record.

  For a small split this doubled the digits pipeline (benchmarks/NOTES.md):
  TFDS decodes records one by one (~40 us each) and array_record starts a
  thread pool per read.
  """

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self.arrays.items()}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    batch = self.read_batch(indices)
    return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

  def read_batch(self, indices: Sequence[int]) -> Batch:
    indices = np.asarray(indices, np.int64)
    # np.take gathers rows faster than fancy indexing (the mlp's 128 x 784
    # alone: 15 against 33 us; in the loop's iterator, 10-14 us a batch).
    return {k: np.take(v, indices, axis=0) for k, v in self.arrays.items()}


def _decoded_bytes(features) -> int | None:
  """Bytes of one decoded example, None if a feature has no fixed shape."""
  total = 0
  for feature in features.values():
    shape = getattr(feature, 'shape', None)  # Nested features: a dict.
    if not isinstance(shape, tuple) or any(d is None for d in shape):
      return None
    total += math.prod(shape) * np.dtype(feature.np_dtype).itemsize
  return total


def _in_memory(source: Sequence[Any], features,
               max_bytes: int = MAX_IN_MEMORY_BYTES) -> Sequence[Any]:
  """`source` decoded into an ArraySource when it fits in `max_bytes`."""
  example_bytes = _decoded_bytes(features)
  if example_bytes is None or example_bytes * len(source) > max_bytes:
    return source
  return ArraySource(_stack(_read_records(source, range(len(source)))))


SYNTHETIC_FIELDS = ('shape', 'num_classes', 'num_train', 'num_eval')


@dataclasses.dataclass(frozen=True)
class SyntheticSource(Sequence):
  """Random-access source of Gaussian inputs ('image', any shape: images or
  float sequences) or, with `vocab_size`, token ids in [1, vocab_size)
  ('tokens'), with random labels.

  For benchmarks and tests of arbitrary shapes, not for learning anything.
  Example i is example i % P of a pool of P examples drawn once from
  `seed` (P as many as fit in 32 MB, at most 4,096, whatever the split's
  length): a pure function of (seed, shape, num_classes, vocab_size, i)
  that costs an index, not a random draw, per example.
  """
  num_examples: int
  shape: tuple[int, ...]
  num_classes: int
  seed: int = 0
  vocab_size: int | None = None

  @functools.cached_property
  def _pool(self) -> ArraySource:
    example_bytes = 4 * math.prod(self.shape)
    size = max(1, min(4096, (32 << 20) // example_bytes))
    rng = np.random.default_rng(self.seed)
    if self.vocab_size:  # No 0s: id 0 is padding to the text models.
      inputs = {TOKENS_KEY: rng.integers(1, self.vocab_size,
                                         (size, *self.shape), np.int32)}
    else:
      inputs = {'image': rng.standard_normal((size, *self.shape),
                                             dtype=np.float32)}
    return ArraySource(dict(inputs,
                            label=rng.integers(self.num_classes, size=size)))

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.num_examples:
      raise IndexError(index)
    return self._pool[index % len(self._pool)]

  def read_batch(self, indices: Sequence[int]) -> Batch:
    return self._pool.read_batch(np.asarray(indices) % len(self._pool))


@dataclasses.dataclass(frozen=True)
class PaddedTokens(Sequence):
  """Labelled token sequences; example i is padded with PAD_ID or truncated.

  Yields {'tokens': int32 [max_length], 'label': int32 []}.
  """
  ids: Sequence[np.ndarray]
  labels: np.ndarray
  max_length: int

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self.ids):
      raise IndexError(index)
    ids = self.ids[index][:self.max_length]
    tokens = np.full(self.max_length, text_lib.PAD_ID, np.int32)
    tokens[:len(ids)] = ids
    return {TOKENS_KEY: tokens, 'label': np.int32(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class PackedWindows(Sequence):
  """Fixed windows of one token stream, for next-token prediction.

  Window i is stream[i*L : i*L + L + 1]: windows overlap by one token, so every
  token after the first is a target exactly once. Yields {'tokens': int32
  [L + 1]}. With `pad_last` (eval) the final partial window is kept, padded
  with PAD_ID (targets the loss ignores); otherwise (train) it is dropped.
  """
  stream: np.ndarray
  max_length: int
  pad_last: bool = False

  def __len__(self) -> int:
    targets = max(len(self.stream) - 1, 0)
    if self.pad_last:
      return math.ceil(targets / self.max_length)
    return targets // self.max_length

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    start = index * self.max_length
    window = self.stream[start:start + self.max_length + 1]
    tokens = np.full(self.max_length + 1, text_lib.PAD_ID, np.int32)
    tokens[:len(window)] = window
    return {TOKENS_KEY: tokens}


@dataclasses.dataclass(frozen=True)
class Sources:
  """The splits of one dataset and what the model needs to know about it.

  `num_classes` is None for a language model's text; `vocab_size` and
  `tokenizer` are set for text only.
  """
  train: Sequence[Any]
  eval: Sequence[Any]
  num_classes: int | None = None
  vocab_size: int | None = None
  tokenizer: text_lib.Tokenizer | None = None

  @property
  def fields(self) -> dict[str, int]:
    """The data's facts for `build_task(config, **sources.fields)`."""
    facts = {'num_classes': self.num_classes, 'vocab_size': self.vocab_size}
    return {k: v for k, v in facts.items() if v is not None}


def _prepared_version_dir(data_dir: str, name: str) -> str | None:
  infos = sorted(glob.glob(os.path.join(data_dir, name, '*', 'dataset_info.json')))
  return os.path.dirname(infos[-1]) if infos else None


def _tfds_splits(cfg: ml_collections.ConfigDict):
  data_dir = os.path.expanduser(cfg.get('data_dir') or DEFAULT_DATA_DIR)
  name = cfg.name
  if name in BUILDERS:
    builder = BUILDERS[name](data_dir=data_dir, file_format='array_record')
    # Offline builders prepare in well under a second; TFDS writes to a
    # temporary directory and renames it, so a crash leaves no half dataset.
    if not builder.is_prepared():
      try:
        builder.download_and_prepare()
      except FileExistsError:
        # Another process (a sweep's parallel trial) renamed its copy into
        # place first: use that one.
        builder = BUILDERS[name](data_dir=data_dir, file_format='array_record')
        if not builder.is_prepared():
          raise
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
  return source[cfg.train_split], source[cfg.eval_split], features


def _as_text(value: Any) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _tokenizer(cfg: ml_collections.ConfigDict, train_texts: Sequence[str],
               workdir: str | None, init_from: str | None) -> text_lib.Tokenizer:
  """The run's tokenizer: read back from `workdir`, else from `init_from`,
  else trained (and saved by `save_tokenizer` once the run is known to
  start)."""
  kind = cfg.get('tokenizer', 'char')
  if kind not in text_lib.TOKENIZERS:
    raise ConfigError(f'dataset.tokenizer {kind!r} is unknown; use one of '
                      f'{", ".join(text_lib.TOKENIZERS)}')
  for directory, fix in ((workdir, ' or use a new workdir'),
                         (init_from, ", the init_from run's")):
    path = os.path.join(directory, TOKENIZER_FILE) if directory else None
    if path and epath.Path(path).exists():
      tokenizer = text_lib.load_tokenizer(path)
      if tokenizer.kind != kind:
        raise ConfigError(f'{path} is a {tokenizer.kind} tokenizer but '
                          f'dataset.tokenizer is {kind!r}; set '
                          f'dataset.tokenizer={tokenizer.kind!r}{fix}')
      # The embeddings index this tokenizer's ids: it cannot be resized. (A
      # BPE may stop short of its vocab_size on little text: no warning.)
      if kind == 'subword' and (cfg.get('vocab_size') or 0) and (
          cfg.vocab_size < tokenizer.vocab_size):
        logging.warning('dataset.vocab_size %d is not used: the run reads %s, '
                        'which has %d ids', cfg.vocab_size, path,
                        tokenizer.vocab_size)
      return tokenizer
  vocab_size = cfg.get('vocab_size')
  if kind == 'subword' and not vocab_size:
    raise ConfigError("dataset.tokenizer 'subword' needs dataset.vocab_size, "
                      'e.g. --config.dataset.vocab_size=1024')
  try:
    tokenizer = text_lib.train_tokenizer(kind, train_texts,
                                         vocab_size=vocab_size)
  except ValueError as e:
    raise ConfigError(f'dataset: {e}') from None
  return tokenizer


def save_tokenizer(sources: 'Sources', workdir: str) -> None:
  """Writes the sources' tokenizer (if any) to `workdir`, unless one is
  there: a resumed run then tokenizes exactly as before."""
  path = epath.Path(workdir) / TOKENIZER_FILE
  if sources.tokenizer is not None and not path.exists():
    sources.tokenizer.save(os.fspath(path))


def _token_stream(tokenizer: text_lib.Tokenizer,
                  texts: Sequence[str]) -> np.ndarray:
  """EOS doc_1 EOS doc_2 ... EOS: the first token of a document is predicted
  from EOS, and its end is predicted as EOS."""
  eos = np.array([text_lib.EOS_ID], np.int32)
  parts = [eos]
  for ids in tokenizer.encode_batch(texts):
    parts += [ids, eos]
  return np.concatenate(parts)


def _text_sources(cfg: ml_collections.ConfigDict, train, eval_, features,
                  workdir: str | None, init_from: str | None) -> Sources:
  text_key = cfg.get('text_key', 'text')
  label_key = cfg.get('label_key', 'label')
  max_length = cfg.get('max_length', DEFAULT_MAX_LENGTH)
  if not isinstance(max_length, int) or max_length <= 0:
    raise ConfigError(f'dataset.max_length must be a positive integer, got '
                      f'{max_length!r}')
  records = {split: _read_records(source, range(len(source)))
             for split, source in (('train', train), ('eval', eval_))}
  texts = {split: [_as_text(r[text_key]) for r in split_records]
           for split, split_records in records.items()}
  # Trained on train text only: eval text stays unseen, as it would be.
  tokenizer = _tokenizer(cfg, texts['train'], workdir, init_from)
  vocab_size = tokenizer.vocab_size
  if label_key in features:
    make = lambda split: PaddedTokens(
        tokenizer.encode_batch(texts[split]),
        np.array([int(r[label_key]) for r in records[split]], np.int32),
        max_length)
    return Sources(make('train'), make('eval'),
                   features[label_key].num_classes, vocab_size, tokenizer)
  return Sources(
      PackedWindows(_token_stream(tokenizer, texts['train']), max_length),
      PackedWindows(_token_stream(tokenizer, texts['eval']), max_length,
                    pad_last=True),
      None, vocab_size, tokenizer)


def load_sources(cfg: ml_collections.ConfigDict, workdir: str | None = None,
                 *, init_from: str | None = None) -> Sources:
  """Returns the train and eval sources named by `config.dataset`.

  For text, a tokenizer is trained on the train split, or, with `workdir`,
  read back from its tokenizer.json when present (`save_tokenizer` writes
  it), so a resumed run tokenizes exactly as before. Failing that, a
  fine-tuning run reads the tokenizer of the run it starts from (the
  workdir `init_from`), whose embeddings index that tokenizer's ids.
  """
  if cfg.name == 'synthetic':
    missing = [k for k in SYNTHETIC_FIELDS if k not in cfg]
    if missing:
      raise ConfigError(
          f'dataset synthetic needs dataset.{", dataset.".join(missing)}; '
          'add them to the dataset section of the config file (overrides '
          'cannot add fields)')
    vocab_size = cfg.get('vocab_size')
    make = lambda n, seed: SyntheticSource(n, tuple(cfg.shape), cfg.num_classes,
                                           seed, vocab_size)
    return Sources(make(cfg.num_train, 0), make(cfg.num_eval, 1),
                   cfg.num_classes, vocab_size)
  try:
    train, eval_, features = _tfds_splits(cfg)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'dataset.name {cfg.name!r} is unknown; offline datasets: '
        f'{", ".join(sorted(BUILDERS))}, synthetic, or a prepared TFDS '
        'catalog name') from None
  if cfg.get('text_key', 'text') in features:
    return _text_sources(cfg, train, eval_, features, workdir, init_from)
  label = features[cfg.get('label_key', 'label')]
  return Sources(_in_memory(train, features), _in_memory(eval_, features),
                 label.num_classes)


def make_preprocess(cfg: ml_collections.ConfigDict):
  """Maps raw examples to {'image': float32, 'label': int32}.

  Works on one example ([H, W, C] image) or a stacked batch ([B, H, W, C]):
  batches are preprocessed whole, which is far cheaper than per example.
  Text examples, already token ids (see `load_sources`), become int32 as
  they are.
  """
  image_key = cfg.get('image_key', 'image')
  label_key = cfg.get('label_key', 'label')

  def preprocess(example: dict[str, Any]) -> Batch:
    if TOKENS_KEY in example:
      return {k: np.asarray(v, np.int32) for k, v in example.items()}
    image = np.asarray(example[image_key])
    if np.issubdtype(image.dtype, np.integer):
      image = np.divide(image, np.float32(255), dtype=np.float32)
    return {'image': image.astype(np.float32, copy=False),
            'label': np.asarray(example[label_key], np.int32)}

  return preprocess


def _read_records(source: Sequence[Any], indices: Sequence[int]) -> list[Any]:
  indices = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    return source.__getitems__(indices)
  return [source[i] for i in indices]


def _stack(records: Sequence[dict[str, Any]]) -> Batch:
  """Records {feature: value} -> {feature: [len(records), ...] array}."""
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def _read_batch(source: Sequence[Any], preprocess,
                indices: Sequence[int]) -> Batch:
  if hasattr(source, 'read_batch'):
    return preprocess(source.read_batch(indices))
  return preprocess(_stack(_read_records(source, indices)))


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ConfigError(f'batch_size {global_batch_size} is not divisible by '
                      f'{process_count} processes; use a multiple of '
                      f'{process_count}')
  return global_batch_size // process_count


_SHUFFLE_CHUNK = 1 << 16  # Positions of an epoch shuffled per array call.


@functools.lru_cache(maxsize=8)
def _shuffled_chunk(n: int, seed: int, chunk: int) -> np.ndarray:
  start = chunk * _SHUFFLE_CHUNK
  positions = np.arange(start, min(start + _SHUFFLE_CHUNK, n))
  return index_shuffle(positions, n - 1, seed).astype(np.int64)


class ShuffledIndexBatches(Sequence):
  """Batch k of `grain.MapDataset.range(n).shuffle(seed).repeat().batch(
  batch_size)`: the same indices in the same order, computed a batch at a
  time. grain's element-by-element graph costs ~18 us per example in
  Python; this, 0.1-0.3 us from 8,192 examples up (more for tinier
  datasets, whose walks through the cipher are longer).

  Position p of the endless stream is in epoch e = p // n, which is
  `index_shuffle` of range(n) with seed (seed + e) mod 2**32; batches may
  straddle two epochs. Positions are shuffled 65,536 at a time and the last
  few chunks kept, so memory does not grow with n.
  """

  def __init__(self, n: int, seed: int, batch_size: int):
    self.n, self.seed, self.batch_size = n, seed, batch_size

  def __len__(self) -> int:
    return sys.maxsize // self.batch_size  # Endless, as repeat() is.

  def __getitem__(self, k: int) -> np.ndarray:
    start = k * self.batch_size
    epoch, offset = divmod(start, self.n)
    chunk, within = divmod(offset, _SHUFFLE_CHUNK)
    table = _shuffled_chunk(self.n, (self.seed + epoch) % 2**32, chunk)
    if within + self.batch_size <= len(table):
      # Most batches lie in one chunk of one epoch: a slice (3x faster).
      return table[within:within + self.batch_size].copy()
    epochs, offsets = np.divmod(np.arange(start, start + self.batch_size),
                                self.n)
    chunks, within = np.divmod(offsets, _SHUFFLE_CHUNK)
    # One number per (epoch, chunk) pair; a batch spans at most a few.
    pairs = epochs * (self.n // _SHUFFLE_CHUNK + 1) + chunks
    out = np.empty(self.batch_size, np.int64)
    for pair in np.unique(pairs):
      here = pairs == pair
      i = np.argmax(here)
      table = _shuffled_chunk(self.n, (self.seed + int(epochs[i])) % 2**32,
                              int(chunks[i]))
      out[here] = table[within[here]]
    return out


def train_iterator(source: Sequence[Any], preprocess, *, seed: int,
                   global_batch_size: int, process_index: int = 0,
                   process_count: int = 1,
                   num_threads: int = 2) -> Iterator[Batch]:
  """An endless iterator of this process's slice of each global train batch.

  Yields dicts of numpy arrays with leading dim global_batch_size //
  process_count. Checkpoint it with `get_state()` / `set_state()`. Sources
  held in memory (with `read_batch`) are read by `ArrayBatches`, others by
  grain with `num_threads` reader threads.
  """
  local = _local_batch_size(global_batch_size, process_count)
  indices = ShuffledIndexBatches(len(source), seed, local)
  if hasattr(source, 'read_batch'):
    return ArrayBatches(source, preprocess, indices, process_index,
                        process_count)
  # The grain graph works on batches of indices; records are read a batch at
  # a time, which ArrayRecord does several times faster than one by one.
  ds = grain.MapDataset.source(indices)
  ds = ds[process_index::process_count].map(
      lambda indices: _read_batch(source, preprocess, indices))
  read = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=4 if num_threads else 0)
  return iter(ds.to_iter_dataset(read))


class ArrayBatches(Iterator[Batch]):
  """This process's train batches of an in-memory source: batch k*P + p of
  `indices`, read and preprocessed on next().

  The batches `train_iterator`'s grain graph yields, with its iterator's
  state ({'next_index': k}), so checkpoints resume either way. In memory a
  batch costs an index and a gather (~40 us for the mlp's 128 x 784); grain's
  iterator, with no reads to overlap, added ~30 us to each, and reader
  threads only contend with the loop for the GIL (benchmarks/NOTES.md).
  """

  def __init__(self, source, preprocess, indices: ShuffledIndexBatches,
               process_index: int = 0, process_count: int = 1):
    self._source, self._preprocess, self._indices = source, preprocess, indices
    self._process_index, self._process_count = process_index, process_count
    self._next = 0

  def __next__(self) -> Batch:
    k = self._next * self._process_count + self._process_index
    self._next += 1
    return _read_batch(self._source, self._preprocess, self._indices[k])

  def next_stacked(self, k: int) -> Batch:
    """The next k batches stacked [k, B, ...], read with one gather."""
    ks = (self._next + np.arange(k)) * self._process_count + self._process_index
    indices = np.concatenate([self._indices[int(j)] for j in ks])
    self._next += k
    batch = _read_batch(self._source, self._preprocess, indices)
    return {key: v.reshape(k, -1, *v.shape[1:]) for key, v in batch.items()}

  def get_state(self) -> dict[str, int]:
    return {'next_index': self._next}

  def set_state(self, state: dict[str, int]) -> None:
    self._next = int(state['next_index'])


def next_stacked(iterator: Iterator[Batch], k: int) -> Batch:
  """The next k batches of a `train_iterator`, stacked [k, B, ...]."""
  if isinstance(iterator, ArrayBatches):
    return iterator.next_stacked(k)
  batches = [next(iterator) for _ in range(k)]
  return {key: np.stack([b[key] for b in batches]) for key in batches[0]}


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
