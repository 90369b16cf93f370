"""`npz`: numpy arrays saved with `numpy.savez`, one row per example.

Every array in the file is a feature (the model's input is the one named
`dataset.input_key`), of any shape and dtype, except the labels, a 1-D array
named `dataset.label_key` (default 'label') of class ids or class names.
Arrays are read without unpickling: an object array (ragged rows) is
refused.
"""

import zipfile
from typing import Any

import numpy as np

from bigml_jax.data.formats.convert import Format, Split
from bigml_jax.errors import ConfigError


def read(path: str, options: dict[str, Any]) -> Split:
  """The arrays of the .npz file `path`, checked to be one row per example."""
  try:
    with np.load(path, allow_pickle=False) as f:
      if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError('a single array, not an archive of named arrays')
      arrays = {}
      for key in f.files:
        try:
          arrays[key] = f[key]
        except ValueError:  # Object arrays need pickle, which we never use.
          raise ConfigError(
              f'{path}: array {key!r} holds Python objects (ragged rows or '
              'mixed types); save one array of equal-length rows with a '
              'numeric dtype (pad the rows)') from None
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ConfigError(f'{path} is not an .npz file numpy can read ({e}); '
                      'save the arrays with numpy.savez(path, x=..., '
                      'label=...)') from None
  return split(path, arrays, options['label_key'])


def split(path: str, arrays: dict[str, np.ndarray], label_key: str) -> Split:
  """`arrays` (from `path`) as features and labels, checked to be one row
  per example, numbers only."""
  arrays = dict(arrays)
  if label_key not in arrays:
    raise ConfigError(f'{path} has no array {label_key!r} (its arrays: '
                      f'{", ".join(sorted(arrays)) or "none"}); set '
                      'dataset.label_key to the name of the labels')
  labels = arrays.pop(label_key)
  if labels.ndim != 1:
    raise ConfigError(f'{path}: labels {label_key!r} have shape '
                      f'{labels.shape}; give one label per example, shape [N]')
  if not arrays:
    raise ConfigError(f'{path} has only the labels {label_key!r}; add the '
                      'feature arrays')
  for key, x in arrays.items():
    if x.dtype == object:
      raise ConfigError(f'{path}: array {key!r} is ragged or holds Python '
                        'objects; give one array of equal-length rows with a '
                        'numeric dtype (pad the rows)')
    if x.ndim == 0 or len(x) != len(labels):
      raise ConfigError(
          f'{path}: array {key!r} has {len(x) if x.ndim else "no"} rows but '
          f'{label_key!r} has {len(labels)}; every array needs one row per '
          'example')
    if x.dtype.kind not in 'biuf':
      raise ConfigError(f'{path}: array {key!r} has dtype {x.dtype}; '
                        'features are numbers or booleans')
  return Split(path, arrays, labels)


FORMAT = Format(read, {'label_key': 'label', 'num_classes': None})
