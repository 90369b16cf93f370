"""Files read once into arrays, checked, and written as a TFDS array_record
dataset under data_dir, keyed by a fingerprint of their content.

`prepare(format, cfg, data_dir)` returns the converted dataset's directory:
  data_dir/bigml_jax_files/FORMAT-FINGERPRINT/  (dataset_info.json, one
  array_record file per split: 'train', and 'eval' when dataset.eval_path
  is given)
The fingerprint is a SHA-256 of the format, its conversion options and every
file's relative name and bytes, so changed files (or options) are converted
again and unchanged ones are not. Reading and every check happen before
anything is written; the dataset is written into a hidden temporary
directory beside its final place and renamed there when complete, so
data_dir never holds half a conversion, and processes converting the same
files at once all end with the same one.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.errors import ConfigError

VERSION = 1  # Of the conversion: bump it when a reader's output changes.
FILES_DIR = 'bigml_jax_files'
TRAIN, EVAL = 'train', 'eval'


@dataclasses.dataclass
class Split:
  """The examples of one file (or folder), as read.

  `features`: name -> [N, ...] array (text: an object array of str);
  `labels`: [N] raw labels (integers, or strings naming classes), None for
  unlabelled text; `class_names`: the classes a reader already knows (an
  image folder's sub-folders), in id order.
  """
  path: str
  features: dict[str, np.ndarray]
  labels: np.ndarray | None = None
  class_names: list[str] | None = None

  def __len__(self) -> int:
    return len(next(iter(self.features.values())))


@dataclasses.dataclass(frozen=True)
class Format:
  """A file format: `read(path, options) -> Split` and the dataset fields
  (with their defaults) that change what it reads."""
  read: Callable[[str, dict[str, Any]], Split]
  options: Mapping[str, Any]
  is_folder: bool = False


def options_of(fmt: Format, cfg) -> dict[str, Any]:
  out = {}
  for key, default in fmt.options.items():
    value = cfg.get(key, default)
    out[key] = default if value is None else value
  return out


def _files(path: str) -> list[str]:
  """`path`, or every file under the folder `path` (hidden ones excepted:
  readers skip them too), sorted."""
  if os.path.isfile(path):
    return [path]
  found = []
  for root, dirs, names in os.walk(path):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [os.path.join(root, n) for n in sorted(names)
              if not n.startswith('.')]
  return found


def fingerprint(name: str, options: dict[str, Any],
                paths: Mapping[str, str]) -> str:
  """SHA-256 (hex) of the format, its options and the files' names and
  bytes."""
  h = hashlib.sha256(json.dumps(
      [VERSION, name, sorted(options.items())], default=str).encode())
  for split in sorted(paths):
    for path in _files(paths[split]):
      rel = os.path.relpath(path, paths[split])
      h.update(f'\0{split}\0{rel}\0{os.path.getsize(path)}\0'.encode())
      with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          h.update(block)
  return h.hexdigest()


def _integer_labels(labels: np.ndarray, path: str, label_key: str
                    ) -> np.ndarray:
  """Integer-valued labels as int64, or one line naming the first bad one."""
  if labels.dtype.kind in 'iub':
    return labels.astype(np.int64)
  if labels.dtype.kind != 'f':
    raise ConfigError(f'{path}: label {label_key!r} has dtype {labels.dtype}; '
                      'labels are class ids 0, 1, ... or class names')
  for bad, what in ((np.isnan(labels), 'missing (NaN)'),
                    (labels != np.round(labels), 'not a class id')):
    if bad.any():
      i = int(np.argmax(bad))
      raise ConfigError(
          f'{path}: label {label_key!r} is {what} at index {i} '
          f'({labels[i]}); labels are class ids 0, 1, ... or class names: '
          'drop or fix those examples')
  return labels.astype(np.int64)


def class_ids(splits: Mapping[str, Split], options: dict[str, Any]
              ) -> tuple[dict[str, np.ndarray], int, list[str] | None]:
  """Raw labels -> class ids: (ids per split, num_classes, class names).

  Strings name classes, numbered in sorted order of the train split's (or,
  for an image folder, its sub-folders' order); integers are ids already,
  below dataset.num_classes (default: the largest train id + 1). An eval
  label outside the train classes is an error.
  """
  train = splits[TRAIN]
  label_key = options.get('label_key', 'label')
  names = train.class_names
  if names is None and train.labels.dtype.kind in 'USO':
    names = sorted({str(v) for v in train.labels})
  ids = {}
  if names is not None:
    index = {n: i for i, n in enumerate(names)}
    for split, s in splits.items():
      if s.labels.dtype.kind not in 'USO':
        raise ConfigError(f'{s.path}: labels are numbers but the train '
                          f'labels ({train.path}) are class names; use one '
                          'kind in both')
      unknown = [str(v) for v in s.labels if str(v) not in index]
      if unknown:
        raise ConfigError(
            f'{s.path}: label {unknown[0]!r} is not one of the train classes '
            f'({", ".join(names)}); fix the label or add the class to the '
            'train data')
      ids[split] = np.array([index[str(v)] for v in s.labels], np.int64)
    return ids, len(names), names
  for split, s in splits.items():
    if s.labels.dtype.kind in 'USO':
      raise ConfigError(f'{s.path}: labels are class names but the train '
                        f'labels ({train.path}) are numbers; use one kind in '
                        'both')
    ids[split] = _integer_labels(s.labels, s.path, label_key)
  num_classes = options.get('num_classes') or int(ids[TRAIN].max()) + 1
  for split, s in splits.items():
    bad = (ids[split] < 0) | (ids[split] >= num_classes)
    if bad.any():
      i = int(np.argmax(bad))
      raise ConfigError(
          f'{s.path}: label {ids[split][i]} (index {i}) is outside the '
          f'classes 0..{num_classes - 1}; fix the label or set '
          'dataset.num_classes')
  return ids, num_classes, None


def check_same_features(splits: Mapping[str, Split]) -> None:
  """Eval's features must be train's: the same names, shapes and dtypes."""
  train = splits[TRAIN]
  for s in splits.values():
    if s is train:
      continue
    if set(s.features) != set(train.features):
      raise ConfigError(
          f'{s.path} has features {", ".join(sorted(s.features))} but the '
          f'train data ({train.path}) has {", ".join(sorted(train.features))}'
          '; give both the same')
    for key, x in s.features.items():
      t = train.features[key]
      if x.shape[1:] != t.shape[1:] or x.dtype != t.dtype:
        raise ConfigError(
            f'{s.path}: feature {key!r} is {x.dtype} of shape {x.shape[1:]} '
            f'per example but the train data ({train.path}) has {t.dtype} of '
            f'shape {t.shape[1:]}; give both the same')


def _feature_spec(x: np.ndarray):
  if x.dtype.kind in 'OU':
    return tfds.features.Text()
  # Raw bytes: every dtype (float64 too) comes back bit for bit.
  return tfds.features.Tensor(shape=x.shape[1:], dtype=x.dtype,
                              encoding=tfds.features.Encoding.BYTES)


def _write(directory: str, splits: Mapping[str, Split],
           ids: Mapping[str, np.ndarray] | None, label_key: str | None,
           num_classes: int | None, class_names: list[str] | None) -> str:
  """The splits as a TFDS array_record dataset in `directory` (the version
  folder TFDS makes there is returned)."""
  train = splits[TRAIN]
  spec = {k: _feature_spec(v) for k, v in train.features.items()}
  if ids is not None:
    spec[label_key] = (tfds.features.ClassLabel(names=class_names)
                       if class_names else
                       tfds.features.ClassLabel(num_classes=num_classes))
  features = tfds.features.FeaturesDict(spec)

  def examples(split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    s = splits[split]
    for i in range(len(s)):
      example = {k: v[i] for k, v in s.features.items()}
      if ids is not None:
        example[label_key] = int(ids[split][i])
      yield i, example

  class Converted(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The files of one conversion."""
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=features, disable_shuffling=True,
          description=f'Converted by bigml_jax from {train.path}',
          metadata=tfds.core.MetadataDict(
              sources={k: s.path for k, s in splits.items()},
              class_names=class_names))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split):
      return examples(split)

  builder = Converted(data_dir=directory, file_format='array_record')
  builder.download_and_prepare()
  return os.fspath(builder.data_dir)


def prepare(name: str, fmt: Format, cfg, data_dir: str) -> str:
  """The directory of `cfg`'s files converted (once) under `data_dir`."""
  options = options_of(fmt, cfg)
  paths = _paths(name, fmt, cfg)
  fp = fingerprint(name, options, paths)
  parent = os.path.join(data_dir, FILES_DIR)
  target = os.path.join(parent, f'{name}-{fp[:24]}')
  if os.path.exists(os.path.join(target, 'dataset_info.json')):
    return target
  splits = {split: fmt.read(path, options) for split, path in paths.items()}
  check_same_features(splits)
  if options.get('label_key') and splits[TRAIN].labels is not None:
    ids, num_classes, names = class_ids(splits, options)
  else:
    ids = num_classes = names = None
  made = not os.path.exists(parent)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{name}-{fp[:24]}-', dir=parent)
  try:
    written = _write(tmp, splits, ids, options.get('label_key'), num_classes,
                     names)
    try:
      os.rename(written, target)
    except OSError:
      if not os.path.exists(os.path.join(target, 'dataset_info.json')):
        raise  # Not another process's finished copy: a real failure.
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if made:
      shutil.rmtree(parent, ignore_errors=True)
    raise
  shutil.rmtree(tmp, ignore_errors=True)
  return target


def _paths(name: str, fmt: Format, cfg) -> dict[str, str]:
  """{'train': path[, 'eval': path]}, each checked to exist."""
  kind = 'folder' if fmt.is_folder else 'file'
  if not cfg.get('train_path'):
    raise ConfigError(f'dataset {name!r} needs dataset.train_path, the '
                      f'{kind} to train on (and dataset.eval_path, or '
                      'dataset.eval_fraction to hold out part of it)')
  paths = {TRAIN: cfg.train_path}
  if cfg.get('eval_path'):
    paths[EVAL] = cfg.eval_path
  for split, path in paths.items():
    path = paths[split] = os.path.abspath(os.path.expanduser(str(path)))
    field = f'dataset.{split}_path'
    if not os.path.exists(path):
      raise ConfigError(f'{field} {path} does not exist; pass the {kind} '
                        f'of your {split} data')
    if os.path.isdir(path) != fmt.is_folder:
      raise ConfigError(f'{field} {path} is a '
                        f'{"folder" if os.path.isdir(path) else "file"}; '
                        f'dataset {name!r} reads a {kind}')
  return paths
