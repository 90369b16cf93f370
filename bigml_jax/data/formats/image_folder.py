"""`image_folder`: one sub-folder per class of image files (PNG, JPEG, ...).

  train/cat/001.png, train/cat/002.jpg, ..., train/dog/001.png, ...
Classes are the sub-folders in sorted order (their names are recorded as the
dataset's class names); an eval folder may hold fewer of them, not others.
Every file (hidden ones excepted) is decoded with Pillow, converted to
grayscale or RGB (`dataset.color_mode`; default grayscale when every image
is, else RGB) and resized to `dataset.image_size` (H, W) (default: the
images' own size, which must then be the same for all), bilinearly. Stored
as uint8 [H, W, C] under `dataset.input_key` (default 'image'), in order of
class, then file path.
"""

import os
from typing import Any

import numpy as np
from PIL import Image

from bigml_jax.data.formats.convert import Format, Split
from bigml_jax.errors import ConfigError

_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'F')


def _class_files(path: str) -> dict[str, list[str]]:
  """{class name: its image files, sorted}, hidden files and folders left
  out; a file outside a class folder or an empty class is an error."""
  entries = sorted(e for e in os.listdir(path) if not e.startswith('.'))
  stray = [e for e in entries if not os.path.isdir(os.path.join(path, e))]
  if stray:
    raise ConfigError(f'{os.path.join(path, stray[0])} is not in a class '
                      'folder; put each image in the sub-folder of its class')
  if not entries:
    raise ConfigError(f'{path} has no class folders; put the images of each '
                      'class in a sub-folder named after it')
  classes = {}
  for name in entries:
    files = []
    for root, dirs, names in os.walk(os.path.join(path, name)):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      files += [os.path.join(root, n) for n in sorted(names)
                if not n.startswith('.')]
    if not files:
      raise ConfigError(f'class folder {os.path.join(path, name)} has no '
                        'images; add some or remove the folder')
    classes[name] = files
  return classes


def _open(file: str) -> Image.Image:
  try:
    image = Image.open(file)
    image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ConfigError(f'{file} is not an image Pillow can read ({e}); remove '
                      'it or replace it with a PNG or JPEG') from None
  return image


def _size(options: dict[str, Any], images: list[tuple[str, Image.Image]]
          ) -> tuple[int, int]:
  """(H, W): dataset.image_size, or the one size every image has."""
  size = options['image_size']
  if size:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)
  (first, image), = images[:1]
  for file, other in images:
    if other.size != image.size:
      raise ConfigError(
          f'images differ in size: {first} is {image.height}x{image.width}, '
          f'{file} is {other.height}x{other.width}; set dataset.image_size '
          '(H, W) to resize them all')
  return image.height, image.width


def read(path: str, options: dict[str, Any]) -> Split:
  """The images under the folder `path`, decoded, with their class names."""
  classes = _class_files(path)
  images = [(f, _open(f)) for files in classes.values() for f in files]
  labels = np.array([name for name, files in classes.items() for _ in files])
  mode = options['color_mode']
  if mode not in (None, 'grayscale', 'rgb'):
    raise ConfigError(f"dataset.color_mode {mode!r} is unknown; use "
                      "'grayscale' or 'rgb'")
  if mode is None:
    gray = all(image.mode in _GRAY_MODES for _, image in images)
    mode = 'grayscale' if gray else 'rgb'
  h, w = _size(options, images)
  pixels = np.empty((len(images), h, w, 1 if mode == 'grayscale' else 3),
                    np.uint8)
  for i, (_, image) in enumerate(images):
    image = image.convert('L' if mode == 'grayscale' else 'RGB')
    if image.size != (w, h):
      image = image.resize((w, h), Image.Resampling.BILINEAR)
    pixels[i] = np.asarray(image).reshape(h, w, -1)
  return Split(path, {options['input_key']: pixels}, labels,
               class_names=list(classes))


FORMAT = Format(read, {'label_key': 'label', 'input_key': 'image',
                       'image_size': None, 'color_mode': None},
                is_folder=True)
