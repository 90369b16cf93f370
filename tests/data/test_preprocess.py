"""Preprocessing ops from config strings, and the per-example random keys."""

import ml_collections
import numpy as np
import pytest

from bigml_jax import ConfigError
from bigml_jax.data import augment
from bigml_jax.data import pipeline


def _before(example, image_key='image', label_key='label'):
  """The preprocessing function the pipeline had before ops (commit
  e23985e), kept here to pin that the default ops equal it."""
  if 'tokens' in example:
    return {k: np.asarray(v, np.int32) for k, v in example.items()}
  image = np.asarray(example[image_key])
  if np.issubdtype(image.dtype, np.integer):
    image = np.divide(image, np.float32(255), dtype=np.float32)
  return {'image': image.astype(np.float32, copy=False),
          'label': np.asarray(example[label_key], np.int32)}


def _assert_same(a, b):
  assert list(a) == list(b)
  for k in a:
    assert a[k].dtype == b[k].dtype
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize('example', [
    {'image': np.arange(48, dtype=np.uint8).reshape(2, 4, 6, 1),
     'label': np.array([3, 1]), 'extra': np.zeros(2)},
    {'image': np.linspace(-2, 2, 6).reshape(3, 2), 'label': np.arange(3)},
    {'image': np.ones((8, 8, 1), np.uint8), 'label': np.int64(4)},
    {'tokens': np.array([[5, 6, 0]], np.int64), 'label': np.array([1])},
    {'tokens': np.array([1, 9, 9, 1], np.int64)},
])
def test_default_ops_are_the_preprocessing_of_before(example):
  pre = pipeline.make_preprocess(ml_collections.ConfigDict())
  _assert_same(pre(example), _before(example))


def test_default_ops_read_image_and_label_keys():
  cfg = ml_collections.ConfigDict({'image_key': 'pixels', 'label_key': 'y'})
  example = {'pixels': np.full((2, 2), 255, np.uint8), 'y': np.int64(1)}
  _assert_same(pipeline.make_preprocess(cfg)(example),
               _before(example, 'pixels', 'y'))
  cfg = ml_collections.ConfigDict({'input_key': 'signal'})
  out = pipeline.make_preprocess(cfg)({'signal': np.ones(3, np.float64),
                                       'label': 2})
  assert list(out) == ['signal', 'label'] and out['signal'].dtype == np.float32


def test_ops_from_a_string_replace_the_default():
  cfg = ml_collections.ConfigDict({
      'preprocess': "cast('float16', key='image', out='x') | keep('x')"})
  pre = pipeline.make_preprocess(cfg)
  out = pre({'image': np.array([1, 2], np.uint8), 'label': 1})
  assert list(out) == ['x'] and out['x'].dtype == np.float16
  np.testing.assert_array_equal(out['x'], [1, 2])
  # A list of strings is the same as one joined by '|'.
  listed = pipeline.make_preprocess(ml_collections.ConfigDict({
      'preprocess': ["cast('float16', key='image', out='x')", "keep('x')"]}))
  _assert_same(listed({'image': np.array([1, 2], np.uint8)}), out)


def test_ops_never_write_into_their_input():
  image = np.arange(6, dtype=np.float32)
  batch = {'image': image, 'label': np.zeros(6, np.int64)}
  pipeline.make_preprocess(ml_collections.ConfigDict())(batch)
  assert batch['label'].dtype == np.int64 and batch['image'] is image


@pytest.mark.parametrize('field, spec, message', [
    ('preprocess', 'resize(8)', r"dataset.preprocess: op 'resize' is unknown; "
     'known ops: cast, image_to_float, keep'),
    ('preprocess', 'cast(float32)', r"cannot read op 'cast\(float32\)'; write "
     r'name or name\(arg, key=value\) with Python literals'),
    ('preprocess', "cast('int32', colour=1)", r"op \"cast\('int32', "
     r"colour=1\)\": .*unexpected keyword argument 'colour'"),
    ('augment', 'cast("int32")', r"dataset.augment: op 'cast' is unknown; "
     'cast is not random: put it in dataset.preprocess'),
])
def test_op_mistakes_name_the_field_and_the_fix(field, spec, message):
  with pytest.raises(ConfigError, match=message):
    pipeline.make_preprocess(ml_collections.ConfigDict({field: spec}))


def test_an_op_on_a_missing_feature_lists_the_features():
  pre = pipeline.make_preprocess(ml_collections.ConfigDict(
      {'input_key': 'signal'}))
  with pytest.raises(ConfigError, match="op image_to_float: the data has no "
                     "feature 'signal'; its features: image, label"):
    pre({'image': np.zeros(2), 'label': 0})


def test_example_keys_are_a_function_of_seed_position_and_op():
  draws = lambda seed, positions, op: augment.ExampleKeys(
      seed, np.asarray(positions)).fold_in(op).uniform(3)
  whole = draws(0, range(10), 0)
  # The same example draws the same in any batch (another process's slice).
  np.testing.assert_array_equal(draws(0, [7, 2], 0), whole[[7, 2]])
  assert whole.shape == (10, 3) and 0 <= whole.min() and whole.max() < 1
  assert len(np.unique(whole)) == 30
  for other in (draws(1, range(10), 0), draws(0, range(10), 1)):
    assert not np.isclose(other, whole).any()
  many = draws(5, range(100_000), 2)
  np.testing.assert_allclose(many.mean(0), 0.5, atol=0.005)
  assert abs(np.corrcoef(many.T)[0, 1]) < 0.01
