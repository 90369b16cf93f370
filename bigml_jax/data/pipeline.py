"""Input pipelines: TFDS array_record sources read with grain, per process.

Train: indices -> shuffle(seed, reshuffled each epoch) -> repeat -> batch
(local batch size) -> this process's slice -> read + preprocess -> iterator
(grain's for records; for splits small enough to be decoded into memory,
`ArrayBatches`, which yields the same batches without grain's per-batch
bookkeeping). Local batch k*P + p
holds the examples of global batch k that process p feeds, so the global batch
at every step is the same whatever the number of processes, and the
iterator's `get_state()` (saved in checkpoints) is just a position. Random
preprocessing (augmentation) draws per example from (seed, its position in
this stream), so it too is the same on any number of processes and resumes
exactly.

Eval: the whole split once, in order, padded to full global batches; `mask`
is 1 for real examples and 0 for padding, so each example counts exactly once.

Text datasets (a `text` feature) are tokenized once at load, with a tokenizer
trained on the train split (or the one the caller passes: the run loop's
`resolve_tokenizer` reads back a resumed run's), and the
sources then hold token ids, so both pipelines above serve them unchanged:
  with a label: {'tokens': int32 [max_length], padded with PAD_ID 0, 'label'};
  without (LM): {'tokens': int32 [max_length + 1]}, consecutive windows of one
    stream of the split's documents, `EOS doc EOS doc ... EOS`.

No TensorFlow at run time: `tfds.data_source` reads array_record files with
the `array_record` package. Catalog datasets (e.g. `mnist`) are used only when
already prepared on disk: checking the directory first means nothing ever
tries the network. A user's own files (npz, csv, image_folder, jsonl) are
converted once into the same form (`bigml_jax.data.formats`).
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
from bigml_jax.data import augment
from bigml_jax.data import formats
from bigml_jax.data import preprocess as preprocess_lib
from bigml_jax.data import text as text_lib
from bigml_jax.data.index_shuffle import index_shuffle
from bigml_jax.data.builders import BUILDERS

Batch = dict[str, np.ndarray]
TOKENS_KEY = preprocess_lib.TOKENS_KEY
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
  """Labelled token sequences; example i is padded with `pad_id` (the
  tokenizer's) or truncated.

  Yields {'tokens': int32 [max_length], 'label': int32 []}.
  """
  ids: Sequence[np.ndarray]
  labels: np.ndarray
  max_length: int
  pad_id: int = text_lib.PAD_ID

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self.ids):
      raise IndexError(index)
    ids = self.ids[index][:self.max_length]
    tokens = np.full(self.max_length, self.pad_id, np.int32)
    tokens[:len(ids)] = ids
    return {TOKENS_KEY: tokens, 'label': np.int32(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class PackedWindows(Sequence):
  """Fixed windows of one token stream, for next-token prediction.

  Window i is stream[i*L : i*L + L + 1]: windows overlap by one token, so every
  token after the first is a target exactly once. Yields {'tokens': int32
  [L + 1]}. With `pad_last` (eval) the final partial window is kept, padded
  with `pad_id` (the tokenizer's; targets the loss ignores); otherwise
  (train) it is dropped. A tokenizer without a pad token (GPT-2's: every id
  is a real token) has `pad_id` None: windows then also hold 'valid' int32
  [L + 1], 0 where padded.
  """
  stream: np.ndarray
  max_length: int
  pad_last: bool = False
  pad_id: int | None = text_lib.PAD_ID

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
    tokens = np.full(self.max_length + 1, self.pad_id or 0, np.int32)
    tokens[:len(window)] = window
    if self.pad_id is not None:
      return {TOKENS_KEY: tokens}
    valid = (np.arange(self.max_length + 1) < len(window)).astype(np.int32)
    return {TOKENS_KEY: tokens, 'valid': valid}


@dataclasses.dataclass(frozen=True)
class Sources:
  """The splits of one dataset and what the model needs to know about it.

  `num_classes` is None for a language model's text; `vocab_size` and
  `tokenizer` are set for text only. `class_names` are the labels' names
  in id order (a CSV's label values, an image folder's sub-folders, '0',
  '1', ... for class ids), None without labels.
  """
  train: Sequence[Any]
  eval: Sequence[Any]
  num_classes: int | None = None
  vocab_size: int | None = None
  tokenizer: text_lib.Tokenizer | None = None
  class_names: tuple[str, ...] | None = None

  @property
  def fields(self) -> dict[str, int]:
    """The data's facts for `build_task(config, **sources.fields)`."""
    facts = {'num_classes': self.num_classes, 'vocab_size': self.vocab_size}
    return {k: v for k, v in facts.items() if v is not None}


def _prepared_version_dir(data_dir: str, name: str) -> str | None:
  infos = sorted(glob.glob(os.path.join(data_dir, name, '*', 'dataset_info.json')))
  return os.path.dirname(infos[-1]) if infos else None


def _data_dir(cfg: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(cfg.get('data_dir') or DEFAULT_DATA_DIR)


def _tfds_splits(cfg: ml_collections.ConfigDict):
  data_dir = _data_dir(cfg)
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


def _tokenizer_kind(cfg: ml_collections.ConfigDict) -> str:
  kind = cfg.get('tokenizer', 'char')
  if kind not in text_lib.TOKENIZERS:
    raise ConfigError(f'dataset.tokenizer {kind!r} is unknown; use one of '
                      f'{", ".join(text_lib.TOKENIZERS)}')
  return kind


def resolve_tokenizer(cfg: ml_collections.ConfigDict,
                      candidates: Sequence[tuple[str, str]]
                      ) -> text_lib.Tokenizer | None:
  """The tokenizer a run must reuse, or None (`load_sources` then trains one).

  `candidates` are (path of a tokenizer.json, the fix to name if its kind is
  not dataset.tokenizer's), in order of preference: the run loop passes its
  own workdir's (a resumed run tokenizes exactly as before), then, for a
  fresh fine-tuning run, the init_from run's (its embeddings index those
  ids). The first file that exists is read; a subword `dataset.vocab_size`
  below its size is not used, with a warning.
  """
  for path, fix in candidates:
    if not path or not epath.Path(path).exists():
      continue
    kind = _tokenizer_kind(cfg)
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
  return None


def _train_tokenizer(cfg: ml_collections.ConfigDict,
                     train_texts: Sequence[str]) -> text_lib.Tokenizer:
  """A tokenizer of kind dataset.tokenizer trained on the train text (saved
  by `save_tokenizer` once the run is known to start)."""
  kind = _tokenizer_kind(cfg)
  vocab_size = cfg.get('vocab_size')
  if kind == 'subword' and not vocab_size:
    raise ConfigError("dataset.tokenizer 'subword' needs dataset.vocab_size, "
                      'e.g. --config.dataset.vocab_size=1024')
  try:
    return text_lib.train_tokenizer(kind, train_texts, vocab_size=vocab_size)
  except ValueError as e:
    raise ConfigError(f'dataset: {e}') from None


def save_tokenizer(sources: 'Sources', workdir: str) -> None:
  """Writes the sources' tokenizer (if any) to `workdir`, unless one is
  there: a resumed run then tokenizes exactly as before."""
  path = epath.Path(workdir) / TOKENIZER_FILE
  if sources.tokenizer is not None and not path.exists():
    sources.tokenizer.save(os.fspath(path))


def _token_stream(tokenizer: text_lib.Tokenizer,
                  texts: Sequence[str]) -> np.ndarray:
  """EOS doc_1 EOS doc_2 ... EOS: the first token of a document is predicted
  from EOS, and its end is predicted as EOS. EOS is the tokenizer's (BERT's,
  which has none, separates documents with [SEP])."""
  separator = tokenizer.eos_id if tokenizer.eos_id is not None else (
      tokenizer.sep_id)
  if separator is None:
    raise ConfigError('the tokenizer has neither an EOS nor a [SEP] token to '
                      'separate documents; use one that has')
  eos = np.array([separator], np.int32)
  parts = [eos]
  for ids in tokenizer.encode_batch(texts):
    parts += [ids, eos]
  return np.concatenate(parts)


def _text_sources(cfg: ml_collections.ConfigDict, train, eval_, features,
                  tokenizer: text_lib.Tokenizer | None) -> Sources:
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
  if tokenizer is None:
    # Trained on train text only: eval text stays unseen, as it would be.
    tokenizer = _train_tokenizer(cfg, texts['train'])
  vocab_size = tokenizer.vocab_size
  if label_key in features:
    if tokenizer.pad_id is None:
      raise ConfigError('the tokenizer has no pad token, which labelled text '
                        'needs; use one that has (e.g. a BERT model\'s)')
    # Specials are the tokenizer's own post-processor's (BERT's [CLS] ...
    # [SEP], kept when truncating); the trained tokenizers add none.
    make = lambda split: PaddedTokens(
        tokenizer.encode_batch(texts[split], special_tokens=True,
                               max_length=max_length),
        np.array([int(r[label_key]) for r in records[split]], np.int32),
        max_length, tokenizer.pad_id)
    return Sources(make('train'), make('eval'),
                   features[label_key].num_classes, vocab_size, tokenizer)
  return Sources(
      PackedWindows(_token_stream(tokenizer, texts['train']), max_length,
                    pad_id=tokenizer.pad_id),
      PackedWindows(_token_stream(tokenizer, texts['eval']), max_length,
                    pad_last=True, pad_id=tokenizer.pad_id),
      None, vocab_size, tokenizer)


def load_sources(cfg: ml_collections.ConfigDict, *,
                 tokenizer: text_lib.Tokenizer | None = None) -> Sources:
  """Returns the train and eval sources named by `config.dataset`.

  Text is tokenized with `tokenizer` as it is, or, when None, with one
  trained on the train split (the run loop passes the one
  `resolve_tokenizer` finds, so a resumed or fine-tuning run tokenizes as
  the run it continues). Data without text ignores it.
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
  if cfg.name in formats.FORMATS:
    train, eval_, features = _file_splits(cfg)
  else:
    try:
      train, eval_, features = _tfds_splits(cfg)
    except tfds.core.registered.DatasetNotFoundError:
      raise ConfigError(
          f'dataset.name {cfg.name!r} is unknown; offline datasets: '
          f'{", ".join(sorted(BUILDERS))}, synthetic; your own files: '
          f'{", ".join(formats.FORMATS)}; or a prepared TFDS catalog name'
          ) from None
  train = _train_subset(cfg, train)
  label_key = cfg.get('label_key', 'label')
  label = features[label_key] if label_key in features else None
  if cfg.get('text_key', 'text') in features:
    sources = _text_sources(cfg, train, eval_, features, tokenizer)
  else:
    sources = Sources(_in_memory(train, features), _in_memory(eval_, features),
                      label.num_classes)
  if isinstance(label, tfds.features.ClassLabel):
    sources = dataclasses.replace(sources, class_names=tuple(label.names))
  return sources


DEFAULT_EVAL_FRACTION = 0.2


class Subset(Sequence):
  """Examples `indices` of `source`, read as `source` reads them."""

  def __init__(self, source: Sequence[Any], indices: np.ndarray):
    self.source, self.indices = source, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Any:
    return self.source[int(self.indices[index])]

  def __getitems__(self, indices: Sequence[int]) -> list[Any]:
    return _read_records(self.source, self.indices[np.asarray(indices)])


def _hold_out(cfg: ml_collections.ConfigDict, source: Sequence[Any]
              ) -> tuple[Subset, Subset]:
  """(train, eval): `dataset.eval_fraction` of `source` held out, chosen by
  `dataset.split_seed` (each keeps the file's order)."""
  fraction = cfg.get('eval_fraction')
  fraction = DEFAULT_EVAL_FRACTION if fraction is None else fraction
  n = len(source)
  n_eval = round(n * fraction) if 0 < fraction < 1 else 0
  if not 0 < n_eval < n:
    raise ConfigError(
        f'dataset.eval_fraction {fraction} of {n} examples leaves no eval or '
        'no train examples; use a fraction in (0, 1), or set '
        'dataset.eval_path')
  order = np.random.default_rng(cfg.get('split_seed') or 0).permutation(n)
  return (Subset(source, np.sort(order[n_eval:])),
          Subset(source, np.sort(order[:n_eval])))


def _train_subset(cfg: ml_collections.ConfigDict, train: Sequence[Any]
                    ) -> Sequence[Any]:
  """`dataset.train_examples` of the train split (all when unset), chosen
  by `dataset.split_seed`: the small-data setting, where overfitting shows."""
  n = cfg.get('train_examples')
  if not n:
    return train
  if not 0 < n <= len(train):
    raise ConfigError(
        f'dataset.train_examples {n} is not in 1..{len(train)}, the train '
        'split\'s size; set it within, or unset it to train on all')
  order = np.random.default_rng(cfg.get('split_seed') or 0).permutation(
      len(train))
  return Subset(train, np.sort(order[:n]))


def _file_splits(cfg: ml_collections.ConfigDict):
  """(train, eval, features) of the user's files `cfg` names (converted
  once under data_dir)."""
  train, eval_, features, _ = formats.load(cfg, _data_dir(cfg))
  if eval_ is None:
    train, eval_ = _hold_out(cfg, train)
  elif cfg.get('eval_fraction') is not None:
    raise ConfigError('dataset.eval_fraction and dataset.eval_path are both '
                      'set; hold out part of train or read eval_path, not '
                      'both (unset one)')
  input_key = cfg.get('input_key') or 'image'
  text = cfg.get('text_key', 'text') in features
  if not text and not cfg.get('preprocess') and input_key not in features:
    raise ConfigError(
        f'dataset.input_key {input_key!r} is not a feature of '
        f'{cfg.train_path} (its features: {", ".join(sorted(features))}); '
        "set dataset.input_key to the model's input")
  return train, eval_, features


def make_preprocess(cfg: ml_collections.ConfigDict,
                    train: Sequence[Any] | None = None
                    ) -> preprocess_lib.Preprocess:
  """The preprocessing `cfg` (the dataset section) names: its deterministic
  ops (`dataset.preprocess`, default: images as float32, labels int32; token
  ids int32) for every batch, and its augmentation (`dataset.augment`) for
  train batches (see `bigml_jax.data.preprocess`). `train`, the train
  source, fits the ops that need its statistics (standardize).

  Works on one example ([H, W, C] image) or a stacked batch ([B, H, W, C]):
  batches are preprocessed whole, which is far cheaper than per example.
  """
  read = None if train is None else (
      lambda indices: _read_batch(train, lambda batch: batch, indices))
  return preprocess_lib.Preprocess(cfg, read,
                                   0 if train is None else len(train))


def _read_records(source: Sequence[Any], indices: Sequence[int]) -> list[Any]:
  indices = [int(i) for i in indices]
  if hasattr(source, '__getitems__'):
    return source.__getitems__(indices)
  return [source[i] for i in indices]


def _stack(records: Sequence[dict[str, Any]]) -> Batch:
  """Records {feature: value} -> {feature: [len(records), ...] array}."""
  return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def _read_batch(source: Sequence[Any], preprocess, indices: Sequence[int],
                keys: augment.ExampleKeys | None = None) -> Batch:
  if hasattr(source, 'read_batch'):
    batch = source.read_batch(indices)
  else:
    batch = _stack(_read_records(source, indices))
  if keys is None:  # Eval, or a preprocessing function of the caller's.
    return preprocess(batch)
  return preprocess(batch, keys)


def _train_keys(preprocess, seed: int, batches: Sequence[int],
                size: int) -> augment.ExampleKeys | None:
  """Augmentation keys of local train batches `batches` (local batch m of
  `size` holds the train stream's positions m * size + [0, size)), for a
  `Preprocess` that augments; None otherwise."""
  if not (isinstance(preprocess, preprocess_lib.Preprocess) and
          preprocess.augment):
    return None
  positions = (np.asarray(batches, np.int64)[:, None] * size +
               np.arange(size)).reshape(-1)
  return augment.ExampleKeys(seed, positions)


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
  ds = grain.MapDataset.source(_Numbered(indices))
  ds = ds[process_index::process_count].map(
      lambda m_indices: _read_batch(
          source, preprocess, m_indices[1],
          _train_keys(preprocess, seed, [m_indices[0]], local)))
  read = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=4 if num_threads else 0)
  return iter(ds.to_iter_dataset(read))


class _Numbered(Sequence):
  """(k, sequence[k]): the batch's number travels with its indices."""

  def __init__(self, sequence: Sequence[Any]):
    self._sequence = sequence

  def __len__(self) -> int:
    return len(self._sequence)

  def __getitem__(self, k: int) -> tuple[int, Any]:
    return k, self._sequence[k]


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
    return _read_batch(self._source, self._preprocess, self._indices[k],
                       self._keys([k]))

  def next_stacked(self, k: int) -> Batch:
    """The next k batches stacked [k, B, ...], read with one gather."""
    ks = (self._next + np.arange(k)) * self._process_count + self._process_index
    indices = np.concatenate([self._indices[int(j)] for j in ks])
    self._next += k
    batch = _read_batch(self._source, self._preprocess, indices,
                        self._keys(ks))
    return {key: v.reshape(k, -1, *v.shape[1:]) for key, v in batch.items()}

  def _keys(self, ks: Sequence[int]) -> augment.ExampleKeys | None:
    return _train_keys(self._preprocess, self._indices.seed, ks,
                       self._indices.batch_size)

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
