"""The digits builder, grain pipelines, per-process slices and eval padding."""

import ml_collections
import numpy as np
import pytest

from bigml_jax import ConfigError
from bigml_jax.data import pipeline


@pytest.fixture(scope='module')
def digits(data_dir):
  cfg = ml_collections.ConfigDict({'name': 'digits', 'train_split': 'train',
                                   'eval_split': 'test', 'data_dir': data_dir})
  return pipeline.load_sources(cfg), pipeline.make_preprocess(cfg)


def test_digits_are_real_images_split_by_index(digits):
  from sklearn.datasets import load_digits
  sources, _ = digits
  assert (len(sources.train), len(sources.eval), sources.num_classes) == (1437, 360, 10)
  ref = load_digits()
  # Test example j is original image 5j; train skips every 5th.
  for j, original in [(0, 0), (7, 35), (359, 1795)]:
    ex = sources.eval[j]
    assert ex['image'].shape == (8, 8, 1) and ex['image'].dtype == np.uint8
    assert int(ex['label']) == ref.target[original]
    np.testing.assert_array_equal(
        ex['image'][..., 0], np.round(ref.images[original] * 255 / 16))
  assert int(sources.train[4]['label']) == ref.target[6]


def test_train_batches_preprocessed_and_deterministic(digits):
  sources, pre = digits
  take = lambda seed: [next(it) for it in [pipeline.train_iterator(
      sources.train, pre, seed=seed, global_batch_size=16)] for _ in range(3)]
  a, b, c = take(0), take(0), take(1)
  assert a[0]['image'].shape == (16, 8, 8, 1) and a[0]['image'].dtype == np.float32
  assert a[0]['label'].dtype == np.int32
  assert 0.0 <= a[0]['image'].min() and a[0]['image'].max() <= 1.0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not np.array_equal(a[0]['label'], c[0]['label'])


def test_train_examples_is_a_seeded_subset_of_train(digits, data_dir):
  full, _ = digits
  cfg = ml_collections.ConfigDict({
      'name': 'digits', 'train_split': 'train', 'eval_split': 'test',
      'data_dir': data_dir, 'train_examples': 100})
  small = pipeline.load_sources(cfg)
  assert (len(small.train), len(small.eval)) == (100, 360)
  full_images = np.stack([full.train[i]['image'] for i in range(len(full.train))])
  rows = [int(np.flatnonzero((full_images == small.train[j]['image']).all(
      axis=(1, 2, 3)))[0]) for j in range(100)]
  assert rows == sorted(rows) and len(set(rows)) == 100
  cfg.split_seed = 1
  other = pipeline.load_sources(cfg)
  assert not all(np.array_equal(small.train[j]['image'], other.train[j]['image'])
                 for j in range(100))
  cfg.train_examples = 5000
  with pytest.raises(ConfigError, match=r'train_examples 5000 is not in 1\.\.1437'):
    pipeline.load_sources(cfg)


def test_epochs_cover_the_split_and_reshuffle(digits):
  sources, pre = digits
  n = len(sources.train)
  src = [{'image': np.zeros((1,), np.uint8), 'label': i} for i in range(n)]
  it = pipeline.train_iterator(src, pre, seed=3, global_batch_size=n)
  first, second = next(it)['label'], next(it)['label']
  assert sorted(first) == list(range(n)) == sorted(second)
  assert not np.array_equal(first, second)


def test_process_slices_make_up_the_global_batch(digits):
  sources, pre = digits
  whole = pipeline.train_iterator(sources.train, pre, seed=0, global_batch_size=8)
  parts = [pipeline.train_iterator(sources.train, pre, seed=0,
                                   global_batch_size=8, process_index=p,
                                   process_count=4) for p in range(4)]
  for _ in range(3):
    expected = next(whole)['label']
    got = np.concatenate([next(p)['label'] for p in parts])
    np.testing.assert_array_equal(got, expected)


def test_iterator_state_resumes_exactly(digits):
  sources, pre = digits
  it = pipeline.train_iterator(sources.train, pre, seed=0, global_batch_size=8)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)['label'] for _ in range(3)]
  resumed = pipeline.train_iterator(sources.train, pre, seed=0, global_batch_size=8)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['label'], want)


@pytest.mark.parametrize('processes', [1, 4])
def test_eval_counts_every_example_once(digits, processes):
  sources, pre = digits
  per_process = [list(pipeline.eval_batches(
      sources.eval, pre, global_batch_size=64, process_index=p,
      process_count=processes)) for p in range(processes)]
  assert {len(b) for b in per_process} == {6}  # ceil(360 / 64)
  labels = np.concatenate([b['label'][b['mask'] > 0]
                           for step in zip(*per_process) for b in step])
  np.testing.assert_array_equal(
      labels, [sources.eval[i]['label'] for i in range(360)])
  last = per_process[-1][-1]
  assert last['image'].shape == (64 // processes, 8, 8, 1)
  assert last['mask'].sum() == (40 if processes == 1 else 0)


def test_synthetic_source_any_shape():
  cfg = ml_collections.ConfigDict({'name': 'synthetic', 'shape': (4, 3),
                                   'num_classes': 5, 'num_train': 10,
                                   'num_eval': 4})
  sources = pipeline.load_sources(cfg)
  assert (len(sources.train), len(sources.eval), sources.num_classes) == (10, 4, 5)
  x = sources.train[3]
  assert x['image'].shape == (4, 3) and 0 <= x['label'] < 5
  np.testing.assert_array_equal(x['image'], sources.train[3]['image'])
  assert not np.array_equal(x['image'], sources.eval[3]['image'])


def test_unprepared_catalog_dataset_fails_fast_without_network(data_dir):
  cfg = ml_collections.ConfigDict({'name': 'mnist', 'train_split': 'train',
                                   'eval_split': 'test', 'data_dir': data_dir})
  with pytest.raises(ConfigError, match=r"dataset 'mnist' is not prepared .*"
                     r'offline datasets: digits, fortunes, .*kjv_bible, '
                     r'synthetic.*tfds build mnist'):
    pipeline.load_sources(cfg)


def test_unknown_split_lists_splits(data_dir):
  cfg = ml_collections.ConfigDict({'name': 'digits', 'train_split': 'train',
                                   'eval_split': 'validation', 'data_dir': data_dir})
  with pytest.raises(ConfigError, match="no split 'validation'; its splits: "
                     'test, train'):
    pipeline.load_sources(cfg)


def test_batch_not_divisible_by_processes(digits):
  sources, pre = digits
  with pytest.raises(ConfigError, match='batch_size 10 is not divisible by 4 '
                     'processes'):
    pipeline.train_iterator(sources.train, pre, seed=0, global_batch_size=10,
                            process_count=4)


def test_small_splits_are_decoded_once_and_read_the_same(digits, data_dir):
  sources, pre = digits
  assert isinstance(sources.train, pipeline.ArraySource)
  cfg = ml_collections.ConfigDict({'name': 'digits', 'train_split': 'train',
                                   'eval_split': 'test', 'data_dir': data_dir})
  records, _, features = pipeline._tfds_splits(cfg)  # pylint: disable=protected-access
  assert not isinstance(records, pipeline.ArraySource)
  # One byte too small a budget keeps the record-by-record source.
  size = pipeline._decoded_bytes(features) * len(records)  # pylint: disable=protected-access
  assert size == 1437 * (64 + 8)
  assert pipeline._in_memory(records, features, size - 1) is records  # pylint: disable=protected-access
  batches = lambda src: [next(it) for it in [pipeline.train_iterator(
      src, pre, seed=3, global_batch_size=32)] for _ in range(5)]
  for a, b in zip(batches(records), batches(sources.train)):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_synthetic_examples_are_a_pure_function_of_seed_and_index():
  make = lambda seed: pipeline.SyntheticSource(10_000, (64, 64, 3), 7, seed)
  src = make(0)
  pool = (32 << 20) // (4 * 64 * 64 * 3)  # 682 examples fit in 32 MB.
  batch = src.read_batch([5, 5 + pool, 9_999])
  np.testing.assert_array_equal(batch['image'][0], batch['image'][1])
  np.testing.assert_array_equal(batch['image'][2], make(0)[9_999]['image'])
  assert not np.array_equal(batch['image'][0], batch['image'][2])
  assert not np.array_equal(make(1)[5]['image'], batch['image'][0])
  # The split's length does not enter: a longer split starts the same.
  longer = pipeline.SyntheticSource(50_000, (64, 64, 3), 7, 0)
  for k in ('image', 'label'):
    np.testing.assert_array_equal(longer.read_batch([5, 9_999])[k],
                                  src.read_batch([5, 9_999])[k])
  assert batch['image'].shape == (3, 64, 64, 3) and batch['label'].max() < 7
  with pytest.raises(IndexError):
    src[10_000]  # pylint: disable=pointless-statement


@pytest.mark.parametrize('n,batch_size,seed', [(10, 3, 0), (1437, 64, 5),
                                               (100, 100, 7), (7, 16, 1),
                                               (70_001, 1000, 3)])
def test_shuffled_index_batches_equal_grains_graph(n, batch_size, seed):
  import grain  # pylint: disable=g-import-not-at-top
  graph = (grain.MapDataset.range(n).shuffle(seed=seed).repeat()
           .batch(batch_size, drop_remainder=True))
  ours = pipeline.ShuffledIndexBatches(n, seed, batch_size)
  # Across many epoch boundaries; with n = 70,001, batch 65 straddles the
  # first 65,536-position chunk, batch 70 the epoch (its second chunk).
  for k in [*range(25), 65, 70, 1000, 12345]:
    np.testing.assert_array_equal(ours[k], graph[k])


class _RecordsOnly:
  """An in-memory split seen as records only, which takes grain's path."""

  def __init__(self, arrays: pipeline.ArraySource):
    self._arrays = arrays

  def __len__(self):
    return len(self._arrays)

  def __getitem__(self, i):
    return self._arrays[i]


def test_in_memory_batches_are_grains_with_its_state():
  """An in-memory split skips grain's iterator: the same batches, across
  epochs and process slices, and states each one resumes from."""
  arrays = pipeline.ArraySource({
      'image': np.arange(100 * 4, dtype=np.uint8).reshape(100, 2, 2, 1),
      'label': np.arange(100)})
  pre = pipeline.make_preprocess(ml_collections.ConfigDict())
  make = lambda src, p: pipeline.train_iterator(
      src, pre, seed=3, global_batch_size=16, process_index=p, process_count=2)
  for p in range(2):
    ours, grains = make(arrays, p), make(_RecordsOnly(arrays), p)
    assert isinstance(ours, pipeline.ArrayBatches)
    assert not isinstance(grains, pipeline.ArrayBatches)
    for _ in range(9):  # 9 x 16 global examples: past the first epoch.
      a, b = next(ours), next(grains)
      for k in ('image', 'label'):
        np.testing.assert_array_equal(a[k], b[k])
    assert ours.get_state() == grains.get_state() == {'next_index': 9}
    swapped_ours, swapped_grains = make(arrays, p), make(_RecordsOnly(arrays), p)
    swapped_ours.set_state(grains.get_state())
    swapped_grains.set_state(ours.get_state())
    for _ in range(3):
      want = next(ours)['label']
      np.testing.assert_array_equal(next(swapped_ours)['label'], want)
      np.testing.assert_array_equal(next(swapped_grains)['label'], want)


def test_synthetic_tokens_for_text_models():
  cfg = ml_collections.ConfigDict({
      'name': 'synthetic', 'shape': (16,), 'num_classes': 2, 'num_train': 100,
      'num_eval': 10, 'vocab_size': 50})
  sources = pipeline.load_sources(cfg)
  assert sources.fields == {'num_classes': 2, 'vocab_size': 50}
  batch = next(pipeline.train_iterator(
      sources.train, pipeline.make_preprocess(cfg), seed=0,
      global_batch_size=8))
  assert set(batch) == {'tokens', 'label'}
  assert batch['tokens'].shape == (8, 16) and batch['tokens'].dtype == np.int32
  assert 1 <= batch['tokens'].min() and batch['tokens'].max() < 50
  assert len(np.unique(batch['tokens'])) > 20
