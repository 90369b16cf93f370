"""Augmentation: what each op does, its draws per (seed, position), off at
eval, the same on any number of processes, and bit-exact on resume."""

import json
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from bigml_jax import ConfigError, train_and_evaluate
from bigml_jax.data import pipeline
from bigml_jax.data.augment import ExampleKeys
from bigml_jax.data.formats import arrays_dataset
from bigml_jax.models import MLP
from bigml_jax.tasks import ClassificationTask

RNG = np.random.default_rng(0)
IMAGES = RNG.random((16, 6, 5, 2), dtype=np.float32)
LABELS = np.arange(16) % 4


def _augment(spec, x=IMAGES, positions=range(16), seed=0, **extra):
  pre = pipeline.make_preprocess(ml_collections.ConfigDict({'augment': spec}))
  batch = {'image': x, 'label': LABELS[:len(x)], **extra}
  return pre(batch, ExampleKeys(seed, np.asarray(positions)))


def test_random_crop_is_a_shifted_window_of_the_padded_image():
  out = _augment('random_crop(pad=1)')['image']
  padded = np.pad(IMAGES, ((0, 0), (1, 1), (1, 1), (0, 0)))
  offsets = set()
  for x, p in zip(out, padded):
    windows = [(dy, dx) for dy in range(3) for dx in range(3)
               if np.array_equal(x, p[dy:dy + 6, dx:dx + 5])]
    assert len(windows) == 1
    offsets.add(windows[0])
  assert len(offsets) >= 5  # 16 draws over 9 offsets.
  np.testing.assert_array_equal(_augment('random_crop(pad=0)')['image'],
                                IMAGES)


def test_flip_left_right_with_probability_p():
  np.testing.assert_array_equal(_augment('flip_left_right(p=1.0)')['image'],
                                IMAGES[:, :, ::-1])
  np.testing.assert_array_equal(_augment('flip_left_right(p=0.0)')['image'],
                                IMAGES)
  half = _augment('flip_left_right')['image']
  flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(half, IMAGES)]
  kept = [np.array_equal(a, b) for a, b in zip(half, IMAGES)]
  assert all(f != k for f, k in zip(flipped, kept)) and 3 < sum(flipped) < 13


def test_random_resized_crop_of_the_whole_image_is_the_image():
  whole = _augment('random_resized_crop(scale=(1.0, 1.0), ratio=(1.0, 1.0))')
  np.testing.assert_allclose(whole['image'], IMAGES, atol=1e-6)
  crops = _augment('random_resized_crop(scale=(0.2, 0.5))')['image']
  assert crops.shape == IMAGES.shape
  assert not np.allclose(crops, IMAGES)
  # Bilinear: each output pixel lies between the input's extremes.
  assert crops.min() >= IMAGES.min() and crops.max() <= IMAGES.max()
  flat = np.full((16, 6, 5, 2), 0.25, np.float32)
  np.testing.assert_allclose(_augment('random_resized_crop', x=flat)['image'],
                             0.25, atol=1e-7)


def test_mixup_blends_pairs_and_weighs_their_labels():
  out = _augment('mixup(alpha=0.4)')
  partner = np.arange(16) ^ 1
  lam = out['mix_weight']
  np.testing.assert_array_equal(lam[::2], lam[1::2])  # One draw per pair.
  want = (lam[:, None, None, None] * IMAGES +
          (1 - lam[:, None, None, None]) * IMAGES[partner])
  np.testing.assert_allclose(out['image'], want, rtol=1e-6)
  np.testing.assert_array_equal(out['mix_label'], LABELS[partner])
  np.testing.assert_array_equal(out['label'], LABELS)
  many = _augment('mixup(alpha=0.4)', x=np.zeros((4000, 1, 1, 1), np.float32),
                  positions=range(4000), label=np.zeros(4000, int))
  # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.139.
  assert abs(many['mix_weight'].mean() - 0.5) < 0.02
  assert abs(many['mix_weight'].var() - 0.25 / 1.8) < 0.01


def test_cutmix_pastes_the_partners_box_and_weighs_by_area():
  out = _augment('cutmix(alpha=1.0)')
  partner = np.arange(16) ^ 1
  own = np.all(out['image'] == IMAGES, axis=-1)
  theirs = np.all(out['image'] == IMAGES[partner], axis=-1)
  assert (own | theirs).all()
  np.testing.assert_allclose(out['mix_weight'], 1 - (theirs & ~own).mean(
      axis=(1, 2)), atol=1e-6)
  assert 0 < out['mix_weight'].mean() < 1


@pytest.mark.parametrize('fill', ['zero', 'wrap'])
def test_time_shift_moves_sequences_along_time(fill):
  x = np.arange(1, 17 * 3 + 1, dtype=np.float32).reshape(1, 17, 3).repeat(
      16, axis=0)
  out = _augment(f'time_shift(3, fill={fill!r})', x=x)['image']
  shifts = set()
  for row in out:
    found = [s for s in range(-3, 4) if np.array_equal(
        row, np.roll(x[0], s, axis=0) if fill == 'wrap' else
        np.concatenate([np.zeros((max(s, 0), 3)), x[0], np.zeros(
            (max(-s, 0), 3))])[max(-s, 0):max(-s, 0) + 17])]
    assert len(found) == 1
    shifts.add(found[0])
  assert len(shifts) >= 4


@pytest.mark.parametrize('spec', [
    'random_crop(pad=2)', 'flip_left_right', 'random_resized_crop',
    'mixup', 'cutmix', 'time_shift(2)',
    "random_crop(pad=1, mode='reflect') | flip_left_right | cutmix(0.5)"])
def test_draws_are_a_function_of_seed_and_position(spec):
  """An example draws the same in any batch: in a 16-batch and in another
  process's 4-example slice at the same positions; other seeds differ."""
  whole = _augment(spec)
  part = _augment(spec, x=IMAGES[8:12], positions=range(8, 12))
  for key in whole:
    np.testing.assert_array_equal(part[key], whole[key][8:12])
  assert not np.array_equal(_augment(spec, seed=1)['image'], whole['image'])


def test_op_mistakes_are_one_line():
  with pytest.raises(ConfigError, match='mixup mixes pairs of examples and '
                     'needs an even batch on every process'):
    _augment('mixup', x=IMAGES[:3], positions=range(3))
  with pytest.raises(ConfigError, match='mixes labels twice'):
    _augment('mixup | cutmix')
  with pytest.raises(ConfigError, match="op 'flip_left_right' is unknown; "
                     'flip_left_right is random: put it in dataset.augment'):
    pipeline.make_preprocess(ml_collections.ConfigDict(
        {'preprocess': 'flip_left_right'}))
  with pytest.raises(ConfigError, match=r"op 'random_crop\(pad=-1\)': pad "
                     'must be >= 0'):
    _augment('random_crop(pad=-1)')
  with pytest.raises(ConfigError, match=r"takes images \[B, H, W, C\]; "
                     r"'image' has shape \(16, 60\)"):
    _augment('flip_left_right', x=IMAGES.reshape(16, 60))


def _sources_and_pre(augment, records=False):
  cfg = ml_collections.ConfigDict({'augment': augment})
  arrays = pipeline.ArraySource({'image': (IMAGES * 255).astype(np.uint8)
                                 .repeat(4, axis=0),
                                 'label': np.arange(64) % 4})
  if records:  # Read record by record: grain's path.
    arrays = pipeline.Subset(list(arrays[i] for i in range(64)),
                             np.arange(64))
  return arrays, pipeline.make_preprocess(cfg)


@pytest.mark.parametrize('records', [False, True])
def test_two_processes_feed_the_global_batch_of_one_and_resume(records):
  source, pre = _sources_and_pre('random_crop(pad=1) | flip_left_right | '
                                 'mixup', records)
  make = lambda p, n: pipeline.train_iterator(
      source, pre, seed=5, global_batch_size=16, process_index=p,
      process_count=n)
  whole, halves = make(0, 1), [make(0, 2), make(1, 2)]
  for _ in range(6):  # Past an epoch (64 examples).
    one = next(whole)
    two = [next(h) for h in halves]
    for key in one:
      np.testing.assert_array_equal(
          np.concatenate([two[0][key], two[1][key]]), one[key])
  resumed = make(1, 2)
  resumed.set_state(halves[1].get_state())
  for _ in range(2):
    want, got = next(halves[1]), next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_augmentation_is_on_in_train_and_off_at_eval():
  source, pre = _sources_and_pre('random_crop(pad=1) | flip_left_right')
  plain = pipeline.make_preprocess(ml_collections.ConfigDict())
  evals = list(pipeline.eval_batches(source, pre, global_batch_size=16))
  for batch, want in zip(evals, pipeline.eval_batches(
      source, plain, global_batch_size=16)):
    for key in batch:
      np.testing.assert_array_equal(batch[key], want[key])
  train = next(pipeline.train_iterator(source, pre, seed=0,
                                       global_batch_size=16))
  unaugmented = next(pipeline.train_iterator(source, plain, seed=0,
                                             global_batch_size=16))
  np.testing.assert_array_equal(train['label'], unaugmented['label'])
  assert not np.array_equal(train['image'], unaugmented['image'])
  # The stacked read (steps_per_dispatch) draws as batch-by-batch reads do.
  a = pipeline.train_iterator(source, pre, seed=0, global_batch_size=16)
  stacked = pipeline.next_stacked(a, 3)
  b = pipeline.train_iterator(source, pre, seed=0, global_batch_size=16)
  for i in range(3):
    np.testing.assert_array_equal(stacked['image'][i], next(b)['image'])


def test_mixed_labels_weigh_the_classification_loss():
  task = ClassificationTask(MLP(features=(), num_classes=3))
  x = RNG.standard_normal((4, 5)).astype(np.float32)
  params = nn.unbox(task.init(jax.random.key(0), {'image': x}))
  batch = {'image': x, 'label': np.array([0, 1, 2, 0]),
           'mix_label': np.array([1, 1, 0, 2]),
           'mix_weight': np.array([0.7, 0.5, 1.0, 0.2], np.float32)}
  # Jitted: eager, every jnp op of the loss compiles a program of its own.
  loss_and_metrics = jax.jit(lambda p, b: task.loss_and_metrics(
      p, b, jax.random.key(1), train=True))
  loss, metrics = loss_and_metrics(params, batch)
  logits = task.model.apply({'params': params}, x)
  ce = lambda y: optax.softmax_cross_entropy_with_integer_labels(logits, y)
  w = batch['mix_weight']
  want = w * ce(batch['label']) + (1 - w) * ce(batch['mix_label'])
  np.testing.assert_allclose(loss, want.mean(), rtol=1e-6)
  hits = lambda y: np.asarray(logits.argmax(-1) == y, np.float32)
  np.testing.assert_allclose(metrics['correct'], np.sum(
      w * hits(batch['label']) + (1 - w) * hits(batch['mix_label'])),
                             rtol=1e-6)
  plain = {k: batch[k] for k in ('image', 'label')}
  np.testing.assert_allclose(loss_and_metrics(params, plain)[0],
                             ce(batch['label']).mean(), rtol=1e-6)


def _params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.device_get(ocp.StandardCheckpointer().restore(path)['params'])


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {r['step']: r['loss'] for r in map(json.loads, f)
            if r['split'] == 'train'}


def test_resume_with_augmentation_is_bit_exact(tiny_config, tmp_path):
  """A run on numpy arrays with crops, flips and mixup, stopped at step 10
  and rerun to 20, ends with the params of an uninterrupted 20-step run,
  bit for bit; the augmentation reached the step (its losses differ from
  the same run without it)."""
  rng = np.random.default_rng(0)
  train = {'image': rng.integers(0, 256, (96, 6, 6, 1)).astype(np.uint8),
           'label': rng.integers(0, 4, 96)}
  test = {k: v[:16] for k, v in train.items()}

  def config(total_steps, augment):
    c = tiny_config(total_steps=total_steps)
    c.dataset = arrays_dataset(train, test, data_dir=str(tmp_path / 'data'),
                               augment=augment)
    return c

  augment = 'random_crop(pad=1) | flip_left_right | mixup(0.4)'
  one = jax.devices()[:1]
  train_and_evaluate(config(20, augment), tmp_path / 'full', devices=one)
  train_and_evaluate(config(10, augment), tmp_path / 'resumed', devices=one)
  train_and_evaluate(config(20, augment), tmp_path / 'resumed', devices=one)
  jax.tree.map(np.testing.assert_array_equal,
               _params(tmp_path / 'resumed', 20), _params(tmp_path / 'full', 20))
  full = _losses(tmp_path / 'full')
  assert _losses(tmp_path / 'resumed') == full
  train_and_evaluate(config(20, ''), tmp_path / 'plain', devices=one)
  assert _losses(tmp_path / 'plain')[5] != full[5]
