"""Data that ships in installed packages, written out as your own files
would be, for the example configs (experiments/configs/*_own.py) and tests.

  python -c "from bigml_jax.data.formats import examples; \
      examples.write_all('/tmp/bigml/files')"

writes under that folder (each one once; an existing one is kept):
  digits_png/{train,test}/DIGIT/INDEX.png  scikit-learn's 8x8 digits, PNG
  digits_npz/{train,test}.npz  the same digits as 1-D sequences: 'pixels'
    float32 [N, 64, 1] (row by row, 0..1) and 'label' int64
  fortunes_jsonl/{train,test}.jsonl  the `fortunes` entries, one
    {"text": ..., "label": "murphy" | "startrek" | "zippy"} per line
with the splits of the shipped `digits` and `fortunes` datasets. The CSV
example reads scikit-learn's own wine_data.csv where it is installed
(`sklearn_csv`).
"""

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

TEST_EVERY = 5  # The shipped splits: index % 5 == 0 is test.


def sklearn_csv(name: str) -> str:
  """The path of scikit-learn's bundled CSV `name` (e.g. 'wine_data.csv'),
  found without importing scikit-learn."""
  spec = importlib.util.find_spec('sklearn')
  root = spec.submodule_search_locations[0]
  return os.path.join(root, 'datasets', 'data', name)


def _write_once(directory: str, fill: Callable[[str], None]) -> str:
  """`fill(tmp)` writes the files in a temporary folder beside `directory`,
  renamed to it when complete; an existing `directory` is kept."""
  directory = os.path.abspath(os.path.expanduser(directory))
  if os.path.exists(directory):
    return directory
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}-', dir=parent)
  try:
    fill(tmp)
    os.rename(tmp, directory)
  except OSError:
    if not os.path.exists(directory):
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory


def _digits():
  """(uint8 [N, 8, 8] pixels 0..255, as the `digits` dataset stores them,
  labels [N])."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  return (np.round(digits.images * (255 / 16)).astype(np.uint8),
          digits.target.astype(np.int64))


def _split(i: int) -> str:
  return 'test' if i % TEST_EVERY == 0 else 'train'


def write_digits_png(directory: str) -> str:
  """DIRECTORY/{train,test}/DIGIT/INDEX.png, 8x8 grayscale."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def fill(tmp):
    images, labels = _digits()
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = os.path.join(tmp, _split(i), str(label))
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(image, mode='L').save(os.path.join(folder,
                                                         f'{i:04d}.png'))

  return _write_once(directory, fill)


def write_digits_npz(directory: str) -> str:
  """DIRECTORY/{train,test}.npz of digits as sequences of 64 pixels."""

  def fill(tmp):
    images, labels = _digits()
    pixels = (images.reshape(-1, 64, 1) / np.float32(255)).astype(np.float32)
    test = np.arange(len(labels)) % TEST_EVERY == 0
    for split, rows in (('train', ~test), ('test', test)):
      np.savez(os.path.join(tmp, f'{split}.npz'), pixels=pixels[rows],
               label=labels[rows])

  return _write_once(directory, fill)


def write_fortunes_jsonl(directory: str) -> str:
  """DIRECTORY/{train,test}.jsonl of the three fortune files' entries."""
  from bigml_jax.data.builders import fortunes  # pylint: disable=g-import-not-at-top

  def fill(tmp):
    lines = {'train': [], 'test': []}
    for name in fortunes.CLASSES:
      for i, text in enumerate(fortunes.read_entries(name)):
        lines[_split(i)].append(json.dumps({'text': text, 'label': name}))
    for split, split_lines in lines.items():
      with open(os.path.join(tmp, f'{split}.jsonl'), 'w',
                encoding='utf-8') as f:
        f.write('\n'.join(split_lines) + '\n')

  return _write_once(directory, fill)


def write_all(directory: str) -> dict[str, str]:
  """Every example above under `directory`; returns their paths by name."""
  return {
      'digits_png': write_digits_png(os.path.join(directory, 'digits_png')),
      'digits_npz': write_digits_npz(os.path.join(directory, 'digits_npz')),
      'fortunes_jsonl': write_fortunes_jsonl(
          os.path.join(directory, 'fortunes_jsonl')),
  }
