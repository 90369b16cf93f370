"""A Hugging Face model's tokenizer as the run's: ids equal to transformers'
fast tokenizers, and the text pipelines built with it."""

import os

import ml_collections
import pytest

from bigml_jax.data import pipeline
from bigml_jax.data import text as text_lib
from bigml_jax.interop import hf
from tests.interop import tiny_hf

TEXTS = tiny_hf.fortune_texts()[::4]  # 382 fortunes of all three files.


@pytest.mark.parametrize('name', ['bert_cls', 'gpt2'])
def test_ids_equal_transformers_tokenizer(name, hf_dir):
  import transformers  # pylint: disable=g-import-not-at-top
  directory = hf_dir(name)
  ours = hf.load_tokenizer(directory)
  theirs = transformers.AutoTokenizer.from_pretrained(directory)
  assert (ours.pad_id, ours.eos_id, ours.cls_id, ours.sep_id, ours.mask_id,
          ours.vocab_size) == (
              theirs.pad_token_id, theirs.eos_token_id, theirs.cls_token_id,
              theirs.sep_token_id, theirs.mask_token_id, len(theirs))
  texts = list(TEXTS)
  assert [x.tolist() for x in ours.encode_batch(texts, special_tokens=True)
          ] == theirs(texts)['input_ids']
  assert [x.tolist() for x in ours.encode_batch(texts)] == theirs(
      texts, add_special_tokens=False)['input_ids']
  assert [x.tolist() for x in ours.encode_batch(
      texts, special_tokens=True, max_length=24)] == theirs(
          texts, truncation=True, max_length=24)['input_ids']
  for text in texts[:50]:
    ids = ours.encode(text)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
  if name == 'gpt2':  # Byte-level BPE: every text comes back as it was.
    assert all(ours.decode(ours.encode(t)) == t for t in texts)


def _dataset(data_dir, name='fortunes'):
  return ml_collections.ConfigDict(dict(
      name=name, train_split='train', eval_split='test', data_dir=data_dir,
      tokenizer='hf', max_length=24))


def test_labelled_text_is_cls_text_sep_padded_as_transformers_pads(
    hf_dir, data_dir):
  import transformers  # pylint: disable=g-import-not-at-top
  directory = hf_dir('bert_cls')
  sources = pipeline.load_sources(
      _dataset(data_dir), tokenizer=text_lib.load_tokenizer(
          os.path.join(directory, pipeline.TOKENIZER_FILE)))
  theirs = transformers.AutoTokenizer.from_pretrained(directory)
  test = pipeline._tfds_splits(_dataset(data_dir))[1]
  texts = [test[i]['text'].decode('utf-8') for i in range(len(test))]
  expected = theirs(texts, truncation=True, max_length=24,
                    padding='max_length')['input_ids']
  ours = [sources.eval[i]['tokens'].tolist() for i in range(307)]
  assert ours == expected
  assert sources.tokenizer.kind == 'hf' and sources.vocab_size == len(theirs)


def test_lm_windows_of_a_tokenizer_without_pad(hf_dir, data_dir):
  """GPT-2's: documents end with <|endoftext|> (id 0, a real token), and
  'valid' marks the padding of the last eval window."""
  sources = pipeline.load_sources(
      _dataset(data_dir, 'kjv_bible'), tokenizer=text_lib.load_tokenizer(
          os.path.join(hf_dir('gpt2'), pipeline.TOKENIZER_FILE)))
  tok = sources.tokenizer
  assert (tok.pad_id, tok.eos_id) == (None, 0)
  first = sources.train[0]
  assert first['tokens'][0] == tok.eos_id and first['valid'].all()
  last = sources.eval[len(sources.eval) - 1]
  real = int(last['valid'].sum())
  assert 0 < real < 25 and not last['valid'][real:].any()
  assert last['tokens'][real - 1] == tok.eos_id  # The split's closing EOS.
