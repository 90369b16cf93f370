"""Your own files as datasets: `dataset.name` npz | csv | image_folder | jsonl.

`dataset.train_path` (and `dataset.eval_path`, else `dataset.eval_fraction`
of train, default 0.2, held out by `dataset.split_seed`, default 0) name the
files; they are converted once into a TFDS array_record dataset under
`dataset.data_dir` (see convert.py) and read by the same pipeline as the
shipped datasets. `arrays_dataset` does the same for numpy arrays in memory.
"""

import hashlib
import os
import uuid

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.data.formats import convert
from bigml_jax.data.formats import csv
from bigml_jax.data.formats import image_folder
from bigml_jax.data.formats import jsonl
from bigml_jax.data.formats import npz
from bigml_jax.errors import ConfigError

FORMATS = {'npz': npz.FORMAT, 'csv': csv.FORMAT,
           'image_folder': image_folder.FORMAT, 'jsonl': jsonl.FORMAT}
ARRAYS_DIR = 'bigml_jax_arrays'


def load(cfg: ml_collections.ConfigDict, data_dir: str):
  """(train source, eval source or None, features, class names or None) of
  the files `cfg` names, converted first if they have not been."""
  directory = convert.prepare(cfg.name, FORMATS[cfg.name], cfg, data_dir)
  builder = tfds.builder_from_directory(directory)
  source = builder.as_data_source()
  metadata = builder.info.metadata or {}
  return (source[convert.TRAIN], source.get(convert.EVAL),
          builder.info.features, metadata.get('class_names'))


def _save_npz(arrays: dict[str, np.ndarray], directory: str) -> str:
  """`arrays` as DIRECTORY/SHA256.npz (written once, atomically)."""
  h = hashlib.sha256()
  for key in sorted(arrays):
    x = np.ascontiguousarray(arrays[key])
    h.update(f'{key}\0{x.dtype.str}\0{x.shape}\0'.encode())
    h.update(x.tobytes())
  path = os.path.join(directory, h.hexdigest()[:32] + '.npz')
  if not os.path.exists(path):
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{uuid.uuid4().hex}.npz')
    try:
      np.savez(tmp, **arrays)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return path


def arrays_dataset(train: dict[str, np.ndarray],
                   eval: dict[str, np.ndarray] | None = None,  # pylint: disable=redefined-builtin
                   *, input_key: str = 'image', label_key: str = 'label',
                   data_dir: str | None = None,
                   **fields) -> ml_collections.ConfigDict:
  """A `config.dataset` for numpy arrays held in memory (a notebook's).

  `train` (and `eval`) map feature names to arrays with one row per
  example, the labels under `label_key` and the model's input under
  `input_key`, as an npz file holds them. They are saved once as
  DATA_DIR/bigml_jax_arrays/SHA256.npz (content-addressed, so the same
  arrays give the same file, and a resumed run or a CLI finds them) and
  the section returned names them as an `npz` dataset; `fields` (e.g.
  eval_fraction, augment, num_classes) are added to it. The arrays are
  checked as an npz file's are, before anything is written:

    config.dataset = bigml_jax.data.arrays_dataset(
        {'x': x_train, 'label': y_train}, {'x': x_test, 'label': y_test},
        input_key='x')
    bigml_jax.train_and_evaluate(config, workdir)
  """
  from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = os.path.expanduser(data_dir or pipeline.DEFAULT_DATA_DIR)
  splits = {'train': train} if eval is None else {'train': train,
                                                  'eval': eval}
  checked = {}
  for split, arrays in splits.items():
    try:
      arrays = {k: np.asarray(v) for k, v in arrays.items()}
    except ValueError:  # numpy refuses ragged nested lists.
      raise ConfigError(f'the {split} arrays are ragged; give one array of '
                        'equal-length rows per feature (pad the rows)'
                        ) from None
    checked[split] = npz.split(f'the {split} arrays', arrays, label_key)
  if input_key not in checked['train'].features:
    raise ConfigError(f'input_key {input_key!r} is not among the train '
                      f'arrays ({", ".join(sorted(train))}); pass the name '
                      "of the model's input")
  convert.check_same_features(checked)
  convert.class_ids(checked, {'label_key': label_key,
                              'num_classes': fields.get('num_classes')})
  directory = os.path.join(data_dir, ARRAYS_DIR)
  cfg = ml_collections.ConfigDict({
      'name': 'npz', 'train_split': 'train', 'eval_split': 'eval',
      'train_path': _save_npz({k: np.asarray(v) for k, v in train.items()},
                              directory),
      'input_key': input_key, 'label_key': label_key, 'data_dir': data_dir})
  if eval is not None:
    cfg.eval_path = _save_npz({k: np.asarray(v) for k, v in eval.items()},
                              directory)
  cfg.update(fields)
  return cfg
