"""Your own files as datasets: npz, csv, image folders and jsonl, converted
once under data_dir, checked with one line per mistake."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from bigml_jax import ConfigError
from bigml_jax.data import pipeline
from bigml_jax.data import formats
from bigml_jax.data.formats import arrays_dataset
from bigml_jax.data.formats import convert
from bigml_jax.data.formats import examples


def _cfg(data_dir, name, train_path, eval_path=None, **fields):
  cfg = ml_collections.ConfigDict(dict(
      name=name, train_split='train', eval_split='test', data_dir=str(data_dir),
      train_path=str(train_path), **fields))
  if eval_path is not None:
    cfg.eval_path = str(eval_path)
  return cfg


def _arrays(source):
  """An in-memory split's arrays (the library decodes small splits once)."""
  assert isinstance(source, pipeline.ArraySource)
  return source.arrays


def _write_csv(path, text):
  path.write_text(text)
  return path


def _write_images(root, images):
  """images: {class: [uint8 array [H, W] or [H, W, 3]]} as PNGs."""
  for name, arrays in images.items():
    os.makedirs(root / name, exist_ok=True)
    for i, x in enumerate(arrays):
      Image.fromarray(x).save(root / name / f'{i:02d}.png')
  return root


# Each format round-trips exactly.


def test_npz_round_trips_any_shape_and_dtype(tmp_path):
  rng = np.random.default_rng(0)
  train = {'x': rng.standard_normal((30, 3, 2)),  # float64
           'counts': rng.integers(-2**40, 2**40, (30, 4)),
           'flag': rng.integers(0, 2, 30).astype(bool),
           'label': rng.integers(0, 5, 30)}
  test = {k: v[:7] for k, v in train.items()}
  np.savez(tmp_path / 'train.npz', **train)
  np.savez(tmp_path / 'test.npz', **test)
  sources = pipeline.load_sources(_cfg(tmp_path / 'data', 'npz',
                                       tmp_path / 'train.npz',
                                       tmp_path / 'test.npz', input_key='x'))
  for split, want in ((sources.train, train), (sources.eval, test)):
    got = _arrays(split)
    assert set(got) == set(want)
    for k, v in want.items():
      assert got[k].dtype == v.dtype or k == 'label'
      np.testing.assert_array_equal(got[k], v)
  assert sources.num_classes == 5
  assert sources.class_names == ('0', '1', '2', '3', '4')


def test_csv_round_trips_numbers_and_names_the_classes(tmp_path):
  rows = [(0.1, 1e-300, 'setosa'), (123456.789012345, -2.5, 'virginica'),
          (1 / 3, 7.0, 'versicolor'), (-0.0, 2**53, 'setosa')]
  text = 'a,b,species\n' + ''.join(f'{a!r},{b!r},{s}\n' for a, b, s in rows)
  path = _write_csv(tmp_path / 'iris.csv', text)
  sources = pipeline.load_sources(_cfg(
      tmp_path / 'data', 'csv', path, eval_fraction=0.25,
      label_key='species', input_key='features'))
  assert sources.class_names == ('setosa', 'versicolor', 'virginica')
  got = {}
  for split in (sources.train, sources.eval):
    arrays = _arrays(split)
    for x, y in zip(arrays['features'], arrays['species']):
      got[tuple(x)] = sources.class_names[y]
  assert got == {(a, b): s for a, b, s in rows}
  assert _arrays(sources.train)['features'].dtype == np.float64


def test_image_folder_round_trips_pixels_in_class_order(tmp_path):
  rng = np.random.default_rng(1)
  draw = lambda n: [rng.integers(0, 256, (5, 4, 3), np.uint8) for _ in range(n)]
  images = {'cat': draw(3), 'dog': draw(2)}
  root = _write_images(tmp_path / 'train', images)
  _write_images(tmp_path / 'test', {'dog': images['dog'][:1]})
  sources = pipeline.load_sources(_cfg(tmp_path / 'data', 'image_folder', root,
                                       tmp_path / 'test'))
  arrays = _arrays(sources.train)
  np.testing.assert_array_equal(arrays['image'],
                                np.stack(images['cat'] + images['dog']))
  np.testing.assert_array_equal(arrays['label'], [0, 0, 0, 1, 1])
  assert sources.class_names == ('cat', 'dog') and sources.num_classes == 2
  np.testing.assert_array_equal(_arrays(sources.eval)['label'], [1])
  np.testing.assert_array_equal(_arrays(sources.eval)['image'][0],
                                images['dog'][0])


def test_image_folder_resizes_and_chooses_grayscale(tmp_path):
  gray = {'a': [np.full((4, 6), 10, np.uint8)], 'b': [np.full((8, 8), 200,
                                                           np.uint8)]}
  root = _write_images(tmp_path / 'train', gray)
  with pytest.raises(ConfigError, match=r'images differ in size: .*a/00.png '
                     r'is 4x6, .*b/00.png is 8x8; set dataset.image_size'):
    pipeline.load_sources(_cfg(tmp_path / 'data', 'image_folder', root,
                               eval_fraction=0.5))
  sources = pipeline.load_sources(_cfg(tmp_path / 'data', 'image_folder',
                                       root, eval_fraction=0.5,
                                       image_size=(3, 2)))
  both = sorted(int(x[0, 0, 0]) for s in (sources.train, sources.eval)
                for x in _arrays(s)['image'])
  assert both == [10, 200]
  assert _arrays(sources.train)['image'].shape[1:] == (3, 2, 1)


def test_jsonl_round_trips_text_and_tokenizes_it(tmp_path):
  lines = [{'text': 'ünïcode 日本語 "quoted"\n\tline two', 'label': 'b'},
           {'text': 'plain', 'label': 'a'}, {'text': '', 'label': 'b'}]
  path = tmp_path / 'train.jsonl'
  path.write_text('\n'.join(json.dumps(l) for l in lines) + '\n\n')
  cfg = _cfg(tmp_path / 'data', 'jsonl', path, path, tokenizer='char',
             max_length=64)
  train, _, features, names = formats.load(cfg, cfg.data_dir)
  assert [train[i]['text'].decode('utf-8') for i in range(3)] == [
      l['text'] for l in lines]
  assert names == ['a', 'b'] and features['label'].num_classes == 2
  sources = pipeline.load_sources(cfg)
  assert sources.class_names == ('a', 'b')
  first = sources.train[0]
  assert int(first['label']) == 1
  assert sources.tokenizer.decode(first['tokens']) == lines[0]['text']


def test_jsonl_without_labels_is_a_language_model_dataset(tmp_path):
  path = tmp_path / 'text.jsonl'
  path.write_text(''.join(json.dumps({'text': 'abc ' * 20}) + '\n'
                          for _ in range(10)))
  sources = pipeline.load_sources(_cfg(tmp_path / 'data', 'jsonl', path,
                                       label_key='', tokenizer='char',
                                       max_length=8))
  assert sources.num_classes is None and sources.class_names is None
  assert sources.train[0]['tokens'].shape == (9,)


# Converted once: a changed file again, an unchanged one not.


def test_a_changed_file_is_converted_again_and_an_unchanged_one_not(
    tmp_path, monkeypatch):
  written = []
  write = convert._write  # pylint: disable=protected-access
  monkeypatch.setattr(convert, '_write',
                      lambda *a, **k: written.append(1) or write(*a, **k))
  path = tmp_path / 'x.npz'
  np.savez(path, image=np.zeros((4, 2)), label=np.arange(4))
  cfg = _cfg(tmp_path / 'data', 'npz', path, path)
  first = pipeline.load_sources(cfg)
  again = pipeline.load_sources(cfg)
  assert len(written) == 1
  np.testing.assert_array_equal(_arrays(again.eval)['image'], 0)
  converted = tmp_path / 'data' / convert.FILES_DIR
  assert len(os.listdir(converted)) == 1
  np.savez(path, image=np.ones((4, 2)), label=np.arange(4))
  changed = pipeline.load_sources(cfg)
  assert len(written) == 2 and len(os.listdir(converted)) == 2
  np.testing.assert_array_equal(_arrays(changed.eval)['image'], 1)
  # Only the bytes count: the same content written again is not converted.
  np.savez(path, image=np.ones((4, 2)), label=np.arange(4))
  os.utime(path, (0, 0))
  pipeline.load_sources(cfg)
  assert len(written) == 2
  # A conversion option is part of the fingerprint too.
  pipeline.load_sources(_cfg(tmp_path / 'data', 'npz', path, path,
                             num_classes=6))
  assert len(written) == 3
  del first


def test_eval_fraction_is_held_out_by_split_seed(tmp_path):
  path = tmp_path / 'x.npz'
  np.savez(path, image=np.arange(50.0), label=np.zeros(50, int))
  held = lambda **f: pipeline.load_sources(_cfg(tmp_path / 'data', 'npz',
                                                path, **f))
  a, b, c = held(split_seed=3), held(split_seed=3), held(split_seed=4)
  train, test = _arrays(a.train)['image'], _arrays(a.eval)['image']
  assert len(test) == 10 and len(train) == 40  # Default eval_fraction 0.2.
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                np.arange(50.0))
  np.testing.assert_array_equal(_arrays(b.eval)['image'], test)
  assert not np.array_equal(_arrays(c.eval)['image'], test)
  assert len(_arrays(held(eval_fraction=0.5).eval)['image']) == 25
  with pytest.raises(ConfigError, match='eval_fraction 1.0 of 50 examples'):
    held(eval_fraction=1.0)
  with pytest.raises(ConfigError, match='eval_fraction and dataset.eval_path '
                     'are both set'):
    held(eval_fraction=0.5, eval_path=str(path))


# Bad input: one line naming the file and the fix; nothing in data_dir.


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def _jsonl(path, *records):
  path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n'
                          for r in records))
  return path


def _case_missing_path(d):
  return _cfg(d / 'data', 'npz', d / 'nowhere.npz'), (
      r'dataset.train_path .*nowhere.npz does not exist; pass the file of '
      r'your train data')


def _case_npz_missing_key(d):
  return _cfg(d / 'data', 'npz', _npz(d / 'a.npz', x=np.zeros((3, 2)),
                                      y=np.arange(3))), (
      r"a.npz has no array 'label' \(its arrays: x, y\); set "
      r'dataset.label_key')


def _case_csv_missing_column(d):
  return _cfg(d / 'data', 'csv', _write_csv(d / 'a.csv', 'a,b\n1,2\n'),
              label_key='kind'), (
      r"a.csv has no column 'kind' \(its columns: a, b\); set "
      r'dataset.label_key')


def _case_jsonl_missing_field(d):
  return _cfg(d / 'data', 'jsonl', _jsonl(d / 'a.jsonl', {'text': 'x',
                                                          'label': 1},
                                          {'body': 'y', 'label': 0})), (
      r"a.jsonl line 2 has no field 'text' \(its fields: body, label\); set "
      r'dataset.text_key')


def _case_npz_object_array(d):
  ragged = np.empty(2, object)
  ragged[:] = [np.zeros(3), np.zeros(4)]
  return _cfg(d / 'data', 'npz', _npz(d / 'a.npz', image=ragged,
                                      label=np.arange(2))), (
      r"a.npz: array 'image' holds Python objects \(ragged rows or mixed "
      r'types\); save one array of equal-length rows')


def _case_npz_unequal_rows(d):
  return _cfg(d / 'data', 'npz', _npz(d / 'a.npz', image=np.zeros((5, 2)),
                                      label=np.arange(4))), (
      r"a.npz: array 'image' has 5 rows but 'label' has 4; every array needs "
      'one row per example')


def _case_csv_ragged_row(d):
  return _cfg(d / 'data', 'csv', _write_csv(d / 'a.csv', 'a,label\n1,0\n2\n')
              ), (r'a.csv line 3 has 1 fields but the header has 2; give '
                  'every row one value per column')


def _case_csv_nan_label(d):
  return _cfg(d / 'data', 'csv', _write_csv(
      d / 'a.csv', 'a,label\n1,0\n2,1\n3,NaN\n')), (
      r"a.csv line 4: label column 'label' is missing \('NaN'\); drop or "
      'fill the rows without a label')


def _case_npz_nan_label(d):
  return _cfg(d / 'data', 'npz', _npz(d / 'a.npz', image=np.zeros((3, 1)),
                                      label=np.array([0.0, np.nan, 1.0]))), (
      r"a.npz: label 'label' is missing \(NaN\) at index 1 \(nan\)")


def _case_non_image_file(d):
  root = _write_images(d / 'train', {'cat': [np.zeros((2, 2), np.uint8)]})
  (root / 'cat' / 'notes.txt').write_text('not a picture')
  return _cfg(d / 'data', 'image_folder', root), (
      r'train/cat/notes.txt is not an image Pillow can read \(.*\); remove '
      'it or replace it with a PNG or JPEG')


def _case_truncated_png(d):
  root = _write_images(d / 'train', {'cat': [np.zeros((9, 9), np.uint8)]})
  png = (root / 'cat' / '00.png').read_bytes()
  (root / 'cat' / '00.png').write_bytes(png[:len(png) // 2])
  return _cfg(d / 'data', 'image_folder', root), (
      r'train/cat/00.png is not an image Pillow can read')


def _case_empty_class_folder(d):
  root = _write_images(d / 'train', {'cat': [np.zeros((2, 2), np.uint8)]})
  os.makedirs(root / 'dog')
  return _cfg(d / 'data', 'image_folder', root), (
      r'class folder .*train/dog has no images; add some or remove the folder')


def _case_eval_class_outside(d):
  image = [np.zeros((2, 2), np.uint8)]
  root = _write_images(d / 'train', {'cat': image, 'dog': image})
  _write_images(d / 'test', {'cat': image, 'emu': image})
  return _cfg(d / 'data', 'image_folder', root, d / 'test'), (
      r"test: label 'emu' is not one of the train classes \(cat, dog\)")


def _case_eval_label_outside(d):
  return _cfg(d / 'data', 'npz',
              _npz(d / 'a.npz', image=np.zeros((3, 1)), label=[0, 1, 2]),
              _npz(d / 'b.npz', image=np.zeros((2, 1)), label=[1, 7])), (
      r'b.npz: label 7 \(index 1\) is outside the classes 0..2; fix the label '
      'or set dataset.num_classes')


def _case_eval_csv_name_outside(d):
  return _cfg(d / 'data', 'csv',
              _write_csv(d / 'a.csv', 'a,label\n1,x\n2,y\n'),
              _write_csv(d / 'b.csv', 'a,label\n1,z\n')), (
      r"b.csv: label 'z' is not one of the train classes \(x, y\)")


def _case_shapes_differ(d):
  return _cfg(d / 'data', 'npz',
              _npz(d / 'a.npz', image=np.zeros((3, 40)), label=[0, 1, 2]),
              _npz(d / 'b.npz', image=np.zeros((2, 41)), label=[1, 0])), (
      r"b.npz: feature 'image' is float64 of shape \(41,\) per example but "
      r'the train data \(.*a.npz\) has float64 of shape \(40,\); give both '
      'the same')


def _case_csv_not_a_number(d):
  return _cfg(d / 'data', 'csv', _write_csv(
      d / 'a.csv', 'a,colour,label\n1,red,0\n')), (
      r"a.csv line 2: column 'colour' holds 'red', not a number; fill or "
      'drop the row, or leave the column out of dataset.feature_columns')


def _case_input_key_missing(d):
  return _cfg(d / 'data', 'npz', _npz(d / 'a.npz', x=np.zeros((3, 1)),
                                      label=[0, 1, 2])), (
      r"dataset.input_key 'image' is not a feature of .*a.npz \(its "
      r'features: label, x\); set dataset.input_key')


def _case_folder_for_a_file(d):
  os.makedirs(d / 'dir.npz')
  return _cfg(d / 'data', 'npz', d / 'dir.npz'), (
      r"dataset.train_path .*dir.npz is a folder; dataset 'npz' reads a file")


@pytest.mark.parametrize('case', [
    _case_missing_path, _case_npz_missing_key, _case_csv_missing_column,
    _case_jsonl_missing_field, _case_npz_object_array, _case_npz_unequal_rows,
    _case_csv_ragged_row, _case_csv_nan_label, _case_npz_nan_label,
    _case_non_image_file, _case_truncated_png, _case_empty_class_folder,
    _case_eval_class_outside, _case_eval_label_outside,
    _case_eval_csv_name_outside, _case_shapes_differ, _case_csv_not_a_number,
    _case_input_key_missing, _case_folder_for_a_file,
], ids=lambda f: f.__name__[len('_case_'):])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, case):
  cfg, message = case(tmp_path)
  with pytest.raises(ConfigError, match=message) as e:
    pipeline.load_sources(cfg)
  assert '\n' not in str(e.value)
  # input_key is checked once the data is converted: that case may leave
  # the (complete) conversion; every other leaves no data_dir at all.
  if case is not _case_input_key_missing:
    assert not os.path.exists(tmp_path / 'data')


def test_a_failed_write_leaves_nothing_in_data_dir(tmp_path, monkeypatch):
  path = _npz(tmp_path / 'a.npz', image=np.zeros((3, 1)), label=[0, 1, 2])
  (tmp_path / 'data').mkdir()

  def disk_full(directory, *args):
    os.makedirs(os.path.join(directory, 'half'))
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(convert, '_write', disk_full)
  with pytest.raises(OSError, match='No space left'):
    pipeline.load_sources(_cfg(tmp_path / 'data', 'npz', path))
  assert os.listdir(tmp_path / 'data') == []


# Numpy arrays from Python.


def test_arrays_dataset_names_arrays_for_a_config(tmp_path):
  rng = np.random.default_rng(0)
  train = {'signal': rng.standard_normal((20, 8, 2)).astype(np.float32),
           'label': rng.integers(0, 3, 20)}
  test = {'signal': train['signal'][:5], 'label': train['label'][:5]}
  cfg = arrays_dataset(train, test, input_key='signal',
                       data_dir=str(tmp_path), augment='time_shift(2)')
  assert cfg.name == 'npz' and cfg.augment == 'time_shift(2)'
  assert arrays_dataset(train, test, input_key='signal',
                        data_dir=str(tmp_path)).train_path == cfg.train_path
  sources = pipeline.load_sources(cfg)
  np.testing.assert_array_equal(_arrays(sources.train)['signal'],
                                train['signal'])
  np.testing.assert_array_equal(_arrays(sources.eval)['label'], test['label'])
  with pytest.raises(ConfigError, match="input_key 'x' is not among the "
                     r'train arrays \(label, signal\)'):
    arrays_dataset(train, input_key='x', data_dir=str(tmp_path / 'new'))
  with pytest.raises(ConfigError, match='the train arrays are ragged'):
    arrays_dataset({'image': [[1, 2], [3]], 'label': [0, 1]},
                   data_dir=str(tmp_path / 'new'))
  assert not os.path.exists(tmp_path / 'new')


# The shipped data written out as files reads back as the shipped datasets.


def test_fortunes_as_jsonl_give_the_batches_of_fortunes(tmp_path, data_dir):
  files = examples.write_fortunes_jsonl(str(tmp_path / 'fortunes'))
  own = pipeline.load_sources(_cfg(
      data_dir, 'jsonl', f'{files}/train.jsonl', f'{files}/test.jsonl',
      tokenizer='char', max_length=48))
  shipped = pipeline.load_sources(ml_collections.ConfigDict(dict(
      name='fortunes', train_split='train', eval_split='test',
      data_dir=data_dir, tokenizer='char', max_length=48)))
  assert own.class_names == shipped.class_names == ('murphy', 'startrek',
                                                    'zippy')
  pre = pipeline.make_preprocess(ml_collections.ConfigDict())
  batches = lambda s, p, n: pipeline.train_iterator(
      s.train, pre, seed=1, global_batch_size=32, process_index=p,
      process_count=n)
  one, two = batches(shipped, 0, 1), [batches(own, p, 2) for p in range(2)]
  for _ in range(3):  # Two processes of the files = one of the shipped.
    want, halves = next(one), [next(h) for h in two]
    for key in want:
      np.testing.assert_array_equal(
          np.concatenate([halves[0][key], halves[1][key]]), want[key])


def test_digits_as_png_folder_and_npz_hold_the_digits(tmp_path, data_dir):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  files = examples.write_all(str(tmp_path / 'files'))
  folder = pipeline.load_sources(_cfg(
      data_dir, 'image_folder', f"{files['digits_png']}/train",
      f"{files['digits_png']}/test"))
  test = _arrays(folder.eval)
  digits = load_digits()
  # Test image j of the shipped split is image 5j; the folder is by class.
  want = np.round(digits.images[::5] * 255 / 16).astype(np.uint8)
  order = np.argsort(digits.target[::5], kind='stable')
  np.testing.assert_array_equal(test['image'][..., 0], want[order])
  np.testing.assert_array_equal(test['label'], digits.target[::5][order])
  assert folder.class_names == tuple(str(d) for d in range(10))
  npz = pipeline.load_sources(_cfg(
      data_dir, 'npz', f"{files['digits_npz']}/train.npz",
      f"{files['digits_npz']}/test.npz", input_key='pixels'))
  np.testing.assert_array_equal(_arrays(npz.eval)['pixels'][..., 0],
                                (want.reshape(-1, 64) / np.float32(255)))
