"""Tiny random Hugging Face models, saved once per session, and their
transformers twins (the reference the interop tests compare against)."""

import numpy as np
import pytest

from tests.interop import tiny_hf

# The models of the parity tests: our name -> how tiny_hf saves it.
MODELS = ('bert_mlm', 'bert_cls', 'gpt2')


@pytest.fixture(scope='session')
def hf_dir(tmp_path_factory):
  """Directory of the saved model `name` (one of MODELS), made on first use."""
  made = {}

  def make(name: str) -> str:
    if name not in made:
      path = str(tmp_path_factory.mktemp(name))
      if name == 'gpt2':
        # A wider init than GPT-2's 0.02 keeps a random model's greedy
        # continuations from collapsing into one repeated token.
        made[name] = tiny_hf.save_gpt2(path, initializer_range=0.3)
      else:
        made[name] = tiny_hf.save_bert(
            path, 'BertForMaskedLM' if name == 'bert_mlm' else
            'BertForSequenceClassification', num_labels=3)
    return made[name]

  return make


@pytest.fixture(scope='session')
def reference(hf_dir):
  """(transformers model, token ids [4, 16] int32, its logits) of `name`:
  BERT's ids are fortunes with [CLS] ... [SEP] and padding (a [MASK] in
  each row for the masked LM), GPT-2's fortunes without padding."""
  import torch  # pylint: disable=g-import-not-at-top
  from bigml_jax.interop import hf  # pylint: disable=g-import-not-at-top
  made = {}

  def make(name: str):
    if name not in made:
      directory = hf_dir(name)
      model = tiny_hf.reference(directory)
      tok = hf.load_tokenizer(directory)
      texts = tiny_hf.fortune_texts()[::97][:4]
      bert = name != 'gpt2'
      rows = tok.encode_batch(texts, special_tokens=bert, max_length=16)
      ids = np.full((4, 16), tok.pad_id or 0, np.int32)
      for i, row in enumerate(rows):
        ids[i, :len(row)] = row
      if name == 'bert_mlm':
        ids[:, 2] = tok.mask_id
      assert bert or min(len(r) for r in rows) == 16  # GPT-2: no padding.
      with torch.no_grad():
        logits = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(ids != tok.pad_id if bert else
                                        np.ones_like(ids))).logits.numpy()
      made[name] = model, ids, logits
    return made[name]

  return make
