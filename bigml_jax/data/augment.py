"""Augmentation: random preprocessing ops, deterministic per example.

Every draw is a pure function of (seed, position, op, draw): `position` is
the example's place in the endless train stream (global batch k holds
positions k * batch_size ... (k + 1) * batch_size - 1), so a draw is fixed
by (seed, step, example) whatever the number of processes, and a resumed
run draws exactly what it would have. The generator is a counter-based hash
(splitmix64's finalizer), so drawing for a whole batch is a few array ops.
"""

import dataclasses

import numpy as np
from scipy import special

from bigml_jax.errors import ConfigError

Batch = dict[str, np.ndarray]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finalizer: a bijection of uint64 that mixes every bit."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):  # uint64 arithmetic wraps, as intended.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def _add(a, b) -> np.ndarray:
  with np.errstate(over='ignore'):
    return np.asarray(a, np.uint64) + np.asarray(b, np.uint64)


@dataclasses.dataclass(frozen=True)
class ExampleKeys:
  """The random keys of a batch's examples: (seed, positions [B]).

  `fold_in(i)` derives independent keys for op i; `uniform(n)` draws
  [B, n] floats in [0, 1), the same for an example in any batch.
  """
  seed: int
  positions: np.ndarray
  salt: int = 0

  def fold_in(self, salt: int) -> 'ExampleKeys':
    return ExampleKeys(self.seed, self.positions,
                       int(_mix(_add(_mix(self.salt), salt + 1))))

  def uniform(self, n: int = 1) -> np.ndarray:
    base = _mix(_add(_mix(np.uint64(self.seed) ^ np.uint64(self.salt)),
                     self.positions))
    with np.errstate(over='ignore'):
      counters = _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
    bits = _mix(_add(base[:, None], counters[None, :]))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _images(batch: Batch, key: str, op: str) -> np.ndarray:
  if key not in batch:
    raise ConfigError(f'augmentation op {op}: the data has no feature {key!r}; '
                      f'its features: {", ".join(sorted(batch))}; pass '
                      f'{op}(key=...)')
  x = np.asarray(batch[key])
  if x.ndim != 4:
    raise ConfigError(f'augmentation op {op} takes images [B, H, W, C]; '
                      f'{key!r} has shape {x.shape}')
  return x


def _gather(x_BxHxWxC: np.ndarray, rows_BxH: np.ndarray,
            cols_BxW: np.ndarray) -> np.ndarray:
  """out[b, i, j] = x[b, rows[b, i], cols[b, j]]."""
  b = np.arange(len(x_BxHxWxC))[:, None, None]
  return x_BxHxWxC[b, rows_BxH[:, :, None], cols_BxW[:, None, :]]


def _integers(u: np.ndarray, n) -> np.ndarray:
  """Uniform floats in [0, 1) -> integers in [0, n)."""
  return np.minimum((u * n).astype(np.int64), np.asarray(n) - 1)


@dataclasses.dataclass(frozen=True)
class RandomCrop:
  """Pads H and W by `pad` on each side (zeros, or `mode='reflect'`) and
  crops back to H x W at a random offset: shifts of up to `pad` pixels."""
  pad: int = 4
  mode: str = 'constant'
  key: str | None = None

  def __post_init__(self):
    if self.pad < 0 or self.mode not in ('constant', 'reflect', 'edge'):
      raise ValueError("pad must be >= 0 and mode 'constant', 'reflect' or "
                       "'edge'")

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    x = _images(batch, self.key, 'random_crop')
    _, h, w, _ = x.shape
    p = self.pad
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=self.mode)
    offsets = _integers(keys.uniform(2), 2 * p + 1)
    rows = offsets[:, :1] + np.arange(h)
    cols = offsets[:, 1:] + np.arange(w)
    return {**batch, self.key: _gather(padded, rows, cols)}


@dataclasses.dataclass(frozen=True)
class FlipLeftRight:
  """Mirrors each image (W axis) with probability `p`."""
  p: float = 0.5
  key: str | None = None

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    x = _images(batch, self.key, 'flip_left_right')
    flip = keys.uniform(1)[:, 0] < self.p
    return {**batch, self.key: np.where(flip[:, None, None, None],
                                        x[:, :, ::-1], x)}


def _bilinear_crops(x: np.ndarray, top: np.ndarray, left: np.ndarray,
                    height: np.ndarray, width: np.ndarray) -> np.ndarray:
  """Each image's box (top, left, height, width), in pixels, resized to the
  image's H x W by bilinear interpolation (pixel centres aligned, edges
  clamped)."""
  _, h, w, _ = x.shape
  y = top[:, None] + (np.arange(h) + 0.5) * (height[:, None] / h) - 0.5
  xs = left[:, None] + (np.arange(w) + 0.5) * (width[:, None] / w) - 0.5
  y, xs = np.clip(y, 0, h - 1), np.clip(xs, 0, w - 1)
  y0, x0 = np.floor(y).astype(np.int64), np.floor(xs).astype(np.int64)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  wy = (y - y0)[:, :, None, None].astype(np.float32)
  wx = (xs - x0)[:, None, :, None].astype(np.float32)
  top_row = _gather(x, y0, x0) * (1 - wx) + _gather(x, y0, x1) * wx
  bottom_row = _gather(x, y1, x0) * (1 - wx) + _gather(x, y1, x1) * wx
  return (top_row * (1 - wy) + bottom_row * wy).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
  """Inception-style crop (Szegedy et al., 2015; torchvision's
  RandomResizedCrop): a box of `scale` of the image's area and aspect ratio
  in `ratio` (log-uniform), at a random place, resized back to H x W."""
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  key: str | None = None

  def __post_init__(self):
    if not (0 < self.scale[0] <= self.scale[1] <= 1 and
            0 < self.ratio[0] <= self.ratio[1]):
      raise ValueError('scale must be in (0, 1] and ratio positive, each '
                       '(low, high)')

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    x = _images(batch, self.key, 'random_resized_crop')
    _, h, w, _ = x.shape
    u = keys.uniform(4)
    area = self.scale[0] + u[:, 0] * (self.scale[1] - self.scale[0])
    log_ratio = np.log(self.ratio)
    ratio = np.exp(log_ratio[0] + u[:, 1] * (log_ratio[1] - log_ratio[0]))
    # A box taller or wider than the image is clipped to it (torchvision
    # retries instead, then falls back to the whole image).
    height = np.minimum(h * np.sqrt(area / ratio), h)
    width = np.minimum(w * np.sqrt(area * ratio), w)
    top = u[:, 2] * (h - height)
    left = u[:, 3] * (w - width)
    return {**batch, self.key: _bilinear_crops(x.astype(np.float32), top,
                                               left, height, width)}


def _partners(keys: ExampleKeys, op: str) -> np.ndarray:
  """Row of each example's partner: the example at position ^ 1, which is
  in the same batch (and process) when batches are even."""
  rows = np.arange(len(keys.positions)) ^ 1
  if len(rows) % 2 or (keys.positions[rows] != keys.positions ^ 1).any():
    raise ConfigError(f'augmentation op {op} mixes pairs of examples and '
                      'needs an even batch on every process; use a batch_size '
                      'divisible by 2 x the number of processes')
  return rows


def _pair_draws(keys: ExampleKeys, n: int) -> np.ndarray:
  """[B, n] draws shared by the two examples of each pair (the even one's)."""
  return ExampleKeys(keys.seed, keys.positions & ~1, keys.salt).uniform(n)


def _mixed_labels(batch: Batch, partner: np.ndarray,
                  weight: np.ndarray) -> Batch:
  """The partner's label and the own label's weight in the loss."""
  if 'label' not in batch:
    raise ConfigError("mixup and cutmix mix labels: the batch needs 'label'")
  if 'mix_label' in batch:
    raise ConfigError('dataset.augment mixes labels twice (mixup and '
                      'cutmix); use one of them')
  return {'mix_label': np.asarray(batch['label'])[partner],
          'mix_weight': weight.astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class Mixup:
  """mixup (Zhang et al., 2018): each pair of examples blended,
  x = lam * x + (1 - lam) * x_partner, lam ~ Beta(alpha, alpha), the loss
  weighted the same between the two labels ('mix_label', 'mix_weight')."""
  alpha: float = 0.2
  key: str | None = None

  def __post_init__(self):
    if self.alpha <= 0:
      raise ValueError('alpha must be > 0')

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    if self.key not in batch:
      raise ConfigError(f'augmentation op mixup: the data has no feature '
                        f'{self.key!r}; pass mixup(key=...)')
    x = np.asarray(batch[self.key], np.float32)
    partner = _partners(keys, 'mixup')
    lam = special.betaincinv(self.alpha, self.alpha, _pair_draws(keys, 1)[:, 0])
    lam_x = lam.reshape(-1, *[1] * (x.ndim - 1)).astype(np.float32)
    return {**batch, self.key: lam_x * x + (1 - lam_x) * x[partner],
            **_mixed_labels(batch, partner, lam)}


@dataclasses.dataclass(frozen=True)
class Cutmix:
  """CutMix (Yun et al., 2019): each pair of images swaps a box of area
  (1 - lam) H W, lam ~ Beta(alpha, alpha), at the same place in both; the
  loss weights the own label by the part of the image that stays."""
  alpha: float = 1.0
  key: str | None = None

  def __post_init__(self):
    if self.alpha <= 0:
      raise ValueError('alpha must be > 0')

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    x = _images(batch, self.key, 'cutmix')
    _, h, w, _ = x.shape
    partner = _partners(keys, 'cutmix')
    u = _pair_draws(keys, 3)
    side = np.sqrt(1 - special.betaincinv(self.alpha, self.alpha, u[:, 0]))
    cy, cx = u[:, 1] * h, u[:, 2] * w
    y0 = np.clip(np.round(cy - side * h / 2), 0, h).astype(np.int64)
    y1 = np.clip(np.round(cy + side * h / 2), 0, h).astype(np.int64)
    x0 = np.clip(np.round(cx - side * w / 2), 0, w).astype(np.int64)
    x1 = np.clip(np.round(cx + side * w / 2), 0, w).astype(np.int64)
    inside = (((np.arange(h) >= y0[:, None]) & (np.arange(h) < y1[:, None]))
              [:, :, None] &
              ((np.arange(w) >= x0[:, None]) & (np.arange(w) < x1[:, None]))
              [:, None, :])
    mixed = np.where(inside[..., None], x[partner], x)
    kept = 1 - inside.mean(axis=(1, 2))  # The box as clipped to the image.
    return {**batch, self.key: mixed, **_mixed_labels(batch, partner, kept)}


@dataclasses.dataclass(frozen=True)
class TimeShift:
  """Shifts each sequence [B, L, ...] along L by a random whole number of
  steps in [-max_shift, max_shift], filling with zeros (`fill='zero'`) or
  wrapping around (`fill='wrap'`)."""
  max_shift: int
  fill: str = 'zero'
  key: str | None = None

  def __post_init__(self):
    if self.max_shift < 0 or self.fill not in ('zero', 'wrap'):
      raise ValueError("max_shift must be >= 0 and fill 'zero' or 'wrap'")

  def __call__(self, batch: Batch, keys: ExampleKeys) -> Batch:
    if self.key not in batch or np.ndim(batch[self.key]) < 2:
      raise ConfigError(f'augmentation op time_shift takes sequences [B, L, '
                        f'...] under {self.key!r}; pass time_shift(key=...)')
    x = np.asarray(batch[self.key])
    length = x.shape[1]
    shift = _integers(keys.uniform(1)[:, 0], 2 * self.max_shift + 1
                      ) - self.max_shift
    source = np.arange(length) - shift[:, None]  # out[t] = x[t - shift].
    valid = (source >= 0) & (source < length)
    if self.fill == 'wrap':
      source, valid = source % length, np.ones_like(valid)
    out = np.take_along_axis(
        x, np.clip(source, 0, length - 1).reshape(
            source.shape + (1,) * (x.ndim - 2)), axis=1)
    mask = valid.reshape(valid.shape + (1,) * (x.ndim - 2))
    return {**batch, self.key: np.where(mask, out, np.zeros_like(out))}


OPS = {'random_crop': RandomCrop, 'flip_left_right': FlipLeftRight,
       'random_resized_crop': RandomResizedCrop, 'mixup': Mixup,
       'cutmix': Cutmix, 'time_shift': TimeShift}
