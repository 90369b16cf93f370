"""Tokenizers: characters, or byte-level BPE subwords trained on the spot.

Both share one contract: `encode(str) -> int32 [N]`, `decode(ids) -> str`,
`vocab_size`, ids `PAD_ID = 0` and `EOS_ID = 1` fixed (padding masks and the
LM's document separator rely on them), and `save(path)` / `load_tokenizer(path)`
to a single JSON file, so a run keeps its tokenizer in the workdir and a
resumed run reads the same one back instead of training again.

`encode` adds no special tokens: the pipeline decides where EOS goes.
`decode` drops PAD and EOS, so `decode(encode(text)) == text` for any text the
tokenizer can represent (all text for subwords; text whose characters were
seen in training for characters, others becoming UNK).
"""

import json
import uuid
from collections.abc import Iterable, Sequence

from etils import epath
import numpy as np
import tokenizers

PAD_ID = 0
EOS_ID = 1
_CHAR_UNK_ID = 2
_CHAR_SPECIALS = 3  # pad, eos, unk


def _write_atomically(path: str, text: str) -> None:
  # Concurrent writers (every process of a multi-host run) all write the same
  # bytes; a rename from a private temporary makes each write all-or-nothing.
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  tmp.write_text(text)
  tmp.rename(path)


class CharTokenizer:
  """One id per Unicode character seen in training, after PAD, EOS and UNK.

  Characters are ordered by code point, so the same training text always gives
  the same ids.
  """

  kind = 'char'

  def __init__(self, chars: str):
    self.chars = ''.join(sorted(set(chars)))
    # Sorted code points + searchsorted encode millions of characters per
    # second without a Python loop.
    self._codes = np.array([ord(c) for c in self.chars], np.int64)

  @classmethod
  def train(cls, texts: Iterable[str]) -> 'CharTokenizer':
    seen = set()
    for text in texts:
      seen.update(text)
    return cls(''.join(seen))

  @property
  def vocab_size(self) -> int:
    return len(self.chars) + _CHAR_SPECIALS

  def encode(self, text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode('utf-32-le'), np.uint32).astype(np.int64)
    if not len(self._codes):
      return np.full(codes.shape, _CHAR_UNK_ID, np.int32)
    pos = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
    known = self._codes[pos] == codes
    return np.where(known, pos + _CHAR_SPECIALS, _CHAR_UNK_ID).astype(np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    symbols = '\ufffd' + self.chars  # UNK, then the characters in id order.
    return ''.join(symbols[i - _CHAR_UNK_ID] for i in ids[ids >= _CHAR_UNK_ID])

  def save(self, path: str) -> None:
    _write_atomically(path, json.dumps({'kind': self.kind,
                                        'chars': self.chars}))


class SubwordTokenizer:
  """Byte-level BPE (HF `tokenizers`): any text round-trips, no UNK.

  The vocabulary is PAD, EOS, the 256 byte symbols, then merges learned from
  the training text up to `vocab_size`.
  """

  kind = 'subword'

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    self._tokenizer = tokenizer

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int) -> 'SubwordTokenizer':
    min_size = 2 + 256
    if vocab_size < min_size:
      raise ValueError(f'subword vocab_size {vocab_size} is below {min_size} '
                       '(PAD, EOS and the 256 bytes); use a larger one')
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    # No prefix space: decode(encode(text)) must give back text unchanged.
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=['<pad>', '<eos>'],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return cls(tok)

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tokenizer.encode(text).ids, np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, np.int32)
            for e in self._tokenizer.encode_batch(list(texts))]

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    return self._tokenizer.decode(ids.tolist(), skip_special_tokens=True)

  def save(self, path: str) -> None:
    _write_atomically(path, json.dumps(
        {'kind': self.kind, 'tokenizer': self._tokenizer.to_str()}))


Tokenizer = CharTokenizer | SubwordTokenizer
TOKENIZERS = ('char', 'subword')


def train_tokenizer(kind: str, texts: Sequence[str], *,
                    vocab_size: int | None = None) -> Tokenizer:
  """Trains the tokenizer `kind` ('char' | 'subword') on `texts`.

  `vocab_size` is required for 'subword' (the size reached on enough text)
  and ignored for 'char' (the number of distinct characters + 3).
  """
  if kind == 'char':
    return CharTokenizer.train(texts)
  if kind == 'subword':
    if vocab_size is None:
      raise ValueError('a subword tokenizer needs a vocab_size')
    return SubwordTokenizer.train(texts, vocab_size)
  raise ValueError(f'tokenizer {kind!r} is unknown; use one of '
                   f'{", ".join(TOKENIZERS)}')


def load_tokenizer(path: str) -> Tokenizer:
  """Reads back a tokenizer written by its `save(path)`."""
  data = json.loads(epath.Path(path).read_text())
  if data['kind'] == 'char':
    return CharTokenizer(data['chars'])
  return SubwordTokenizer(tokenizers.Tokenizer.from_str(data['tokenizer']))
