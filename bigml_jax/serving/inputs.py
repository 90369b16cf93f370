"""Raw inputs -> the arrays a run's model was trained on, checked one by one.

What a run's data pipeline did to an example is repeated here with numpy
alone, so an exported model needs neither the data packages nor the model
code: an image is checked against the run's raw shape and dtype, and
integer pixels become float32 / 255 (`pipeline.make_preprocess`); a text is
tokenized, truncated to the run's max_length and padded with PAD
(`pipeline.PaddedTokens`). Every mistake raises `InputError` with one line
that names it, so a server answers that request alone with it.
"""

import base64
import binascii
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

PAD_ID = 0  # bigml_jax.data.text's ids, without importing the data layer.
EOS_ID = 1
_IMAGE_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}


class InputError(ValueError):
  """An input the model cannot take; the message says why, in one line."""


def decode_image_bytes(data: bytes) -> np.ndarray:
  """PNG or JPEG bytes (PIL), or a .npy file's bytes -> an array as stored."""
  if data[:6] == b'\x93NUMPY':
    try:
      return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
      raise InputError(f'the .npy data cannot be read ({e})') from None
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      return image
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises several types for data that is not an image.
    raise InputError('the image data is not a PNG, JPEG or .npy file '
                     f'({type(e).__name__})') from None


def decode_base64(text: Any) -> bytes:
  if not isinstance(text, str):
    raise InputError('"b64" must be a base64 string')
  try:
    return base64.b64decode(text, validate=True)
  except (binascii.Error, ValueError):
    raise InputError('"b64" is not valid base64') from None


def image_array(value: Any, shape: Sequence[int], dtype: str) -> np.ndarray:
  """One image as the run's dataset stored it: `shape` [H, W, C], `dtype`.

  `value` is an array or nested lists of numbers ([H, W] when C is 1), or a
  PIL image (converted to C channels, never resized). Integer dtypes take
  integers in their range only; float dtypes finite numbers.
  """
  height, width, channels = shape
  if hasattr(value, 'convert') and hasattr(value, 'mode'):  # A PIL image.
    if value.size != (width, height):
      raise InputError(f'the image is {value.size[0]}x{value.size[1]} pixels '
                       f'but the model takes {width}x{height}; resize it')
    if channels not in _IMAGE_MODES:
      raise InputError(f'the model takes {channels}-channel images; send '
                       'them as arrays')
    value = np.asarray(value.convert(_IMAGE_MODES[channels]))
  try:
    array = np.asarray(value)
  except ValueError:  # Ragged nested lists.
    raise InputError(f'an image must be a {height}x{width}x{channels} array '
                     'of numbers; the rows have different lengths') from None
  if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or
                                   array.dtype == bool):
    raise InputError(f'an image must be a {height}x{width}x{channels} array '
                     f'of numbers, not {array.dtype.name} values')
  if array.shape == (height, width) and channels == 1:
    array = array[..., None]
  if array.shape != tuple(shape):
    raise InputError(f'an image must be {height}x{width}x{channels}, got '
                     f'shape {list(array.shape)}')
  target = np.dtype(dtype)
  if np.issubdtype(target, np.integer):
    info = np.iinfo(target)
    if not (np.all(np.mod(array, 1) == 0) and array.min() >= info.min and
            array.max() <= info.max):
      raise InputError(f'pixel values must be integers in {info.min}..'
                       f'{info.max} (the run\'s images were {target.name})')
  elif not np.all(np.isfinite(array)):
    raise InputError('pixel values must be finite numbers')
  return array.astype(target)


def preprocess_images(images: Sequence[np.ndarray]) -> np.ndarray:
  """Stored images [H, W, C] -> float32 [B, H, W, C], as in training."""
  batch = np.stack(images)
  if np.issubdtype(batch.dtype, np.integer):
    return np.divide(batch, np.float32(255), dtype=np.float32)
  return batch.astype(np.float32, copy=False)


def check_text(value: Any, what: str = 'a text') -> str:
  if not isinstance(value, str):
    raise InputError(f'{what} must be a string, not {type(value).__name__}')
  if not value.strip():
    raise InputError(f'{what} is empty')
  return value


def padded_tokens(ids_list: Sequence[np.ndarray], length: int) -> np.ndarray:
  """Token ids -> int32 [B, length]: truncated, padded with PAD."""
  tokens = np.full((len(ids_list), length), PAD_ID, np.int32)
  for row, ids in zip(tokens, ids_list):
    ids = ids[:length]
    row[:len(ids)] = ids
  return tokens
