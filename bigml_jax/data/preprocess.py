"""Preprocessing: named ops from the config, applied to whole batches.

`dataset.preprocess` lists deterministic ops, applied to train and eval
batches; `dataset.augment` lists random ones (augmentation), applied to train
batches only. Each is a string of ops separated by '|', as big_vision's
preprocessing strings, or a list of such strings:

  --config.dataset.augment='random_crop(pad=1)|flip_left_right'

An op is `name` or `name(args)` with Python literals for arguments. Unset,
`dataset.preprocess` is today's default for the data:
  images and other features: image_to_float(key=IMAGE_KEY, out=INPUT_KEY) |
    cast('int32', key=LABEL_KEY, out='label') | keep(INPUT_KEY, 'label')
  token ids (text): cast('int32')
with IMAGE_KEY defaulting to INPUT_KEY ('image') and LABEL_KEY to 'label'.

Ops take a batch (or one example) {feature: array} and return a new dict,
never writing into their input (in-memory sources hand out views). A random
op also takes `ExampleKeys`: its draws for an example are a pure function of
(seed, the example's position in the train stream, the op's place in the
list), so they are the same whatever the number of processes, and a resumed
run draws exactly what it would have drawn.
"""

import ast
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from bigml_jax.data import augment
from bigml_jax.errors import ConfigError

Batch = dict[str, np.ndarray]
TOKENS_KEY = 'tokens'


def _feature(batch: Batch, key: str, op: str) -> np.ndarray:
  if key not in batch:
    raise ConfigError(f'preprocessing op {op}: the data has no feature '
                      f'{key!r}; its features: {", ".join(sorted(batch))}')
  return np.asarray(batch[key])


@dataclasses.dataclass(frozen=True)
class ImageToFloat:
  """`key` as float32 under `out`: integers (pixels 0..255) become x / 255,
  other dtypes are cast."""
  key: str = 'image'
  out: str | None = None

  def __call__(self, batch: Batch) -> Batch:
    x = _feature(batch, self.key, 'image_to_float')
    if np.issubdtype(x.dtype, np.integer):
      x = np.divide(x, np.float32(255), dtype=np.float32)
    return {**batch, self.out or self.key: x.astype(np.float32, copy=False)}


@dataclasses.dataclass(frozen=True)
class Cast:
  """`key` (every feature when None) cast to `dtype`, under `out`."""
  dtype: str
  key: str | None = None
  out: str | None = None

  def __call__(self, batch: Batch) -> Batch:
    if self.key is None:
      return {k: np.asarray(v, self.dtype) for k, v in batch.items()}
    x = _feature(batch, self.key, 'cast')
    return {**batch, self.out or self.key: np.asarray(x, self.dtype)}


class Standardize:
  """`key` as (x - mean) / std, float32, with the mean and standard
  deviation of the train split (after the ops before this one) over its
  examples and every axis but the last: per feature of a vector, per
  channel of an image. `fit` computes them once, at load."""

  def __init__(self, key: str = 'image', out: str | None = None):
    self.key, self.out = key, out or key
    self.mean = self.std = None

  def fit(self, batches) -> None:
    """Statistics over `batches`, the train split preprocessed up to here."""
    count, total, squares = 0, 0.0, 0.0
    for batch in batches:
      x = _feature(batch, self.key, 'standardize').astype(np.float64)
      x = x.reshape(-1, x.shape[-1])
      count += len(x)
      total = total + x.sum(0)
      squares = squares + (x * x).sum(0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    # A constant feature stays 0 instead of dividing by 0.
    self.mean, self.std = mean, np.where(std > 0, std, 1.0)

  def __call__(self, batch: Batch) -> Batch:
    if self.mean is None:
      raise ConfigError('preprocessing op standardize needs the train '
                        'split: make_preprocess(dataset_config, '
                        'sources.train)')
    x = _feature(batch, self.key, 'standardize')
    x = ((x - self.mean) / self.std).astype(np.float32)
    return {**batch, self.out: x}


class Keep:
  """Only the features named, in that order."""

  def __init__(self, *keys: str):
    self.keys = keys

  def __call__(self, batch: Batch) -> Batch:
    return {k: _feature(batch, k, 'keep') for k in self.keys}


OPS: dict[str, Callable[..., Any]] = {
    'image_to_float': ImageToFloat, 'cast': Cast, 'keep': Keep,
    'standardize': Standardize}
_FIT_BATCH = 4096  # Examples read at a time to fit statistics.
RANDOM_OPS: dict[str, Callable[..., Any]] = dict(augment.OPS)


def _parse_op(text: str, registry: dict[str, Callable[..., Any]],
              field: str):
  """'name(1, k=2)' -> registry['name'](1, k=2)."""
  try:
    call = ast.parse(text.strip(), mode='eval').body
    if isinstance(call, ast.Name):
      name, args, kwargs = call.id, [], {}
    elif isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
      name = call.func.id
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    else:
      raise ValueError
  except (SyntaxError, ValueError):
    raise ConfigError(f'dataset.{field}: cannot read op {text!r}; write '
                      "name or name(arg, key=value) with Python literals, "
                      "ops separated by '|'") from None
  if name not in registry:
    where = ''
    if registry is OPS and name in RANDOM_OPS:
      where = f'; {name} is random: put it in dataset.augment'
    elif registry is RANDOM_OPS and name in OPS:
      where = f'; {name} is not random: put it in dataset.preprocess'
    raise ConfigError(f'dataset.{field}: op {name!r} is unknown{where}; '
                      f'known ops: {", ".join(sorted(registry))}')
  try:
    return registry[name](*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'dataset.{field}: op {text.strip()!r}: {e}') from None


def parse_ops(spec: str | Sequence[str] | None, field: str) -> list[Any]:
  """The ops of a '|'-separated string (or a list of them); `field` is
  'preprocess' (deterministic ops) or 'augment' (random ones)."""
  if not spec:
    return []
  parts = [spec] if isinstance(spec, str) else list(spec)
  registry = RANDOM_OPS if field == 'augment' else OPS
  return [_parse_op(text, registry, field)
          for part in parts for text in part.split('|') if text.strip()]


def default_ops(cfg: ml_collections.ConfigDict, text: bool) -> list[Any]:
  """Today's preprocessing of the data named by `cfg` (see the module's
  docstring)."""
  if text:
    return [Cast('int32')]
  input_key = cfg.get('input_key') or 'image'
  label_key = cfg.get('label_key') or 'label'
  return [ImageToFloat(cfg.get('image_key') or input_key, input_key),
          Cast('int32', label_key, 'label'), Keep(input_key, 'label')]


class Preprocess:
  """`ops` on every batch, then `augment` on train batches.

  Call with a batch {feature: [B, ...]} (or one example): the deterministic
  ops only. With `keys` (the train iterator passes them), the random ops
  too. Unset `ops` means `default_ops` for the batch's kind (token ids or
  not), chosen per call as the data has them.
  """

  def __init__(self, cfg: ml_collections.ConfigDict,
               read_train: Callable[[Sequence[int]], Batch] | None = None,
               num_train: int = 0):
    self.ops = parse_ops(cfg.get('preprocess'), 'preprocess') or None
    # Augmentation works on the model's input unless an op names a key.
    input_key = cfg.get('input_key') or 'image'
    self.augment = [op if op.key else dataclasses.replace(op, key=input_key)
                    for op in parse_ops(cfg.get('augment'), 'augment')]
    self._defaults = {text: default_ops(cfg, text) for text in (False, True)}
    for i, op in enumerate(self.ops or ()):
      if hasattr(op, 'fit') and read_train is not None:
        op.fit(self._run(self.ops[:i], read_train(range(start, min(
            start + _FIT_BATCH, num_train)))) for start in range(
                0, num_train, _FIT_BATCH))

  @staticmethod
  def _run(ops, batch: Batch) -> Batch:
    for op in ops:
      batch = op(batch)
    return batch

  def __call__(self, batch: Batch,
               keys: augment.ExampleKeys | None = None) -> Batch:
    batch = self._run(self.ops or self._defaults[TOKENS_KEY in batch], batch)
    if keys is not None:
      for i, op in enumerate(self.augment):
        batch = op(batch, keys.fold_in(i))
    return batch
