"""Tiny random Hugging Face models and tokenizers, built offline with
`tokenizers` and transformers' PyTorch classes and saved with
`save_pretrained`: the references the interop tests compare against."""

import functools
import os

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

from bigml_jax.data.builders import fortunes

BERT_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
EOT = '<|endoftext|>'


@functools.cache
def fortune_texts() -> tuple[str, ...]:
  """The 1,526 fortunes (all three files), in file order."""
  return tuple(t for name in fortunes.CLASSES
               for t in fortunes.read_entries(name))


def wordpiece(vocab_size: int = 400) -> tokenizers.Tokenizer:
  """An uncased BERT WordPiece trained on the fortunes: [CLS] ... [SEP]."""
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(fortune_texts(), trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=BERT_SPECIALS,
      show_progress=False))
  cls, sep = tok.token_to_id('[CLS]'), tok.token_to_id('[SEP]')
  tok.post_processor = processors.TemplateProcessing(
      single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
      special_tokens=[('[CLS]', cls), ('[SEP]', sep)])
  return tok


def byte_bpe(vocab_size: int = 400) -> tokenizers.Tokenizer:
  """A GPT-2-style byte-level BPE trained on the fortunes; <|endoftext|> is
  id 0 and its only special token (no pad)."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(fortune_texts(), trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=[EOT],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  return tok


def save_bert(directory: str, architecture: str = 'BertForMaskedLM',
              seed: int = 0, **config) -> str:
  """A random BERT of `architecture` with the WordPiece tokenizer, saved to
  `directory`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tok = transformers.BertTokenizerFast(tokenizer_object=wordpiece())
  fields = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=64, pad_token_id=tok.pad_token_id)
  fields.update(config)
  torch.manual_seed(seed)
  model = getattr(transformers, architecture)(
      transformers.BertConfig(**fields)).eval()
  model.save_pretrained(directory)
  tok.save_pretrained(directory)
  return directory


def save_gpt2(directory: str, seed: int = 0, **config) -> str:
  """A random GPT2LMHeadModel with the byte-level BPE, saved to
  `directory`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tok = transformers.GPT2TokenizerFast(tokenizer_object=byte_bpe(),
                                       bos_token=EOT, eos_token=EOT,
                                       unk_token=EOT)
  fields = dict(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4,
                n_positions=64, bos_token_id=tok.eos_token_id,
                eos_token_id=tok.eos_token_id)
  fields.update(config)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**fields))
  model.eval().save_pretrained(directory)
  tok.save_pretrained(directory)
  return directory


def reference(directory: str):
  """The saved model as transformers reads it back (eval mode)."""
  import json  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, 'config.json')) as f:
    architecture = json.load(f)['architectures'][0]
  return getattr(transformers, architecture).from_pretrained(directory).eval()
