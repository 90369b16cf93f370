"""Tokenizers: characters, byte-level BPE subwords trained on the spot, or a
pretrained model's own Hugging Face `tokenizer.json`.

All share one contract: `encode(str) -> int32 [N]`, `encode_batch(texts)`,
`decode(ids) -> str`, `vocab_size`, their special ids as attributes
(`pad_id`, `eos_id`, `bos_id`, `cls_id`, `sep_id`, `mask_id`, `unk_id`; None
where a tokenizer has no such token), and `save(path)` /
`load_tokenizer(path)` to a single JSON file, so a run keeps its tokenizer in
the workdir and a resumed run reads the same one back instead of training
again. The trained ones fix `PAD_ID = 0` and `EOS_ID = 1`; a Hugging Face
tokenizer's ids are its own (GPT-2 has no pad token, and its id 0 is "!").

`encode` adds no special tokens: the pipeline decides where EOS goes;
`encode_batch(texts, special_tokens=True, max_length=L)` adds those of the
tokenizer's own post-processor (BERT's [CLS] ... [SEP]; none for the trained
ones) and truncates to L ids, specials included. `decode` drops special
tokens, so `decode(encode(text)) == text` for any text the tokenizer can
represent (all text for subwords; text whose characters were seen in
training for characters, others becoming UNK; a normalising HF tokenizer,
e.g. an uncased WordPiece, gives the normalised text).
"""

import json
import uuid
from collections.abc import Iterable, Sequence

from etils import epath
import numpy as np
import tokenizers

from bigml_jax.errors import ConfigError
from bigml_jax.vocab import EOS_ID, PAD_ID  # pylint: disable=unused-import

_CHAR_UNK_ID = 2
_CHAR_SPECIALS = 3  # pad, eos, unk
SPECIAL_ROLES = ('pad', 'eos', 'bos', 'cls', 'sep', 'mask', 'unk')
# The roles of well-known special tokens, for a tokenizer_config.json that
# names none (bert-base-uncased's and gpt2's name none).
_KNOWN_SPECIALS = {
    '[PAD]': ('pad',), '[CLS]': ('cls',), '[SEP]': ('sep',),
    '[MASK]': ('mask',), '[UNK]': ('unk',), '<pad>': ('pad',),
    '<s>': ('bos',), '</s>': ('eos',), '<mask>': ('mask',), '<unk>': ('unk',),
    '<|endoftext|>': ('bos', 'eos', 'unk')}


class _FixedSpecials:
  """The special ids of the trained tokenizers: PAD 0, EOS 1, no others."""
  pad_id, eos_id = PAD_ID, EOS_ID
  bos_id = cls_id = sep_id = mask_id = unk_id = None


def _truncated(ids: list[np.ndarray], max_length: int | None
               ) -> list[np.ndarray]:
  return ids if max_length is None else [x[:max_length] for x in ids]


def _write_atomically(path: str, text: str) -> None:
  # Concurrent writers (every process of a multi-host run) all write the same
  # bytes; a rename from a private temporary makes each write all-or-nothing.
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
  tmp.write_text(text)
  tmp.rename(path)


class CharTokenizer(_FixedSpecials):
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

  def encode_batch(self, texts: Sequence[str], *, special_tokens: bool = False,
                   max_length: int | None = None) -> list[np.ndarray]:
    del special_tokens  # It adds none.
    return _truncated([self.encode(t) for t in texts], max_length)

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    symbols = '\ufffd' + self.chars  # UNK, then the characters in id order.
    return ''.join(symbols[i - _CHAR_UNK_ID] for i in ids[ids >= _CHAR_UNK_ID])

  def save(self, path: str) -> None:
    _write_atomically(path, json.dumps({'kind': self.kind,
                                        'chars': self.chars}))


class SubwordTokenizer(_FixedSpecials):
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

  def encode_batch(self, texts: Sequence[str], *, special_tokens: bool = False,
                   max_length: int | None = None) -> list[np.ndarray]:
    del special_tokens  # It adds none.
    return _truncated([np.asarray(e.ids, np.int32)
                       for e in self._tokenizer.encode_batch(list(texts))],
                      max_length)

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    return self._tokenizer.decode(ids.tolist(), skip_special_tokens=True)

  def save(self, path: str) -> None:
    _write_atomically(path, json.dumps(
        {'kind': self.kind, 'tokenizer': self._tokenizer.to_str()}))


  def to_str(self) -> str:
    """The `tokenizers` JSON of the BPE (a Hugging Face tokenizer.json)."""
    return self._tokenizer.to_str()


def _token_content(value) -> str | None:
  """A tokenizer_config.json special token: a string, or an AddedToken
  dict with its 'content'."""
  return value.get('content') if isinstance(value, dict) else value


class HFTokenizer:
  """A Hugging Face `tokenizer.json` (WordPiece, byte-level BPE, ...) with
  its special tokens: a pretrained model's own tokenizer, run by the
  `tokenizers` library exactly as `transformers`' fast tokenizers run it.

  Args:
    tokenizer_json: the tokenizer.json text.
    special_tokens: role ('pad', 'eos', 'bos', 'cls', 'sep', 'mask', 'unk')
      -> token, e.g. {'cls': '[CLS]'}; the ids are the file's.
    config: the tokenizer_config.json fields, kept for writing it back.
  """

  kind = 'hf'

  def __init__(self, tokenizer_json: str, special_tokens: dict[str, str],
               config: dict | None = None):
    self.tokenizer_json = tokenizer_json
    self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json)
    # The pipeline pads and truncates; a file's own settings would fight it.
    self._tokenizer.no_padding()
    self._tokenizer.no_truncation()
    self._truncating = {}
    self.special_tokens = {role: token for role, token in special_tokens.items()
                           if token is not None}
    self.config = dict(config or {})
    for role in SPECIAL_ROLES:
      token = self.special_tokens.get(role)
      setattr(self, f'{role}_id',
              None if token is None else self._tokenizer.token_to_id(token))

  @classmethod
  def from_file(cls, path: str) -> 'HFTokenizer':
    """Reads the tokenizer.json `path`, with the special tokens that the
    tokenizer_config.json (or special_tokens_map.json) beside it names, and
    the well-known ones ([CLS], <|endoftext|>, ...) for roles it leaves out."""
    path = epath.Path(path)
    if not path.exists():
      raise ConfigError(f'{path.parent} holds no tokenizer.json; a '
                        'pretrained model is read with its tokenizer (save '
                        'it there with tokenizer.save_pretrained)')
    tokenizer_json = path.read_text()
    read = lambda name: (json.loads((path.parent / name).read_text())
                         if (path.parent / name).exists() else {})
    config = read('tokenizer_config.json')
    named = {**read('special_tokens_map.json'), **config}
    specials = {role: _token_content(named[f'{role}_token'])
                for role in SPECIAL_ROLES if f'{role}_token' in named}
    for token in json.loads(tokenizer_json).get('added_tokens') or []:
      for role in _KNOWN_SPECIALS.get(token['content'], ()):
        # A role named null (GPT-2's pad_token) has no token.
        if token.get('special') and f'{role}_token' not in named:
          specials.setdefault(role, token['content'])
    return cls(tokenizer_json, specials, config)

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(
        self._tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: Sequence[str], *, special_tokens: bool = False,
                   max_length: int | None = None) -> list[np.ndarray]:
    tokenizer = self._tokenizer
    if max_length is not None:
      if max_length not in self._truncating:
        # Truncation that keeps the post-processor's specials: [SEP] stays.
        tokenizer = tokenizers.Tokenizer.from_str(self._tokenizer.to_str())
        tokenizer.enable_truncation(max_length)
        self._truncating[max_length] = tokenizer
      tokenizer = self._truncating[max_length]
    return [np.asarray(e.ids, np.int32) for e in tokenizer.encode_batch(
        list(texts), add_special_tokens=special_tokens)]

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(ids, np.int64).reshape(-1)
    return self._tokenizer.decode(ids.tolist(), skip_special_tokens=True)

  def save(self, path: str) -> None:
    _write_atomically(path, json.dumps(
        {'kind': self.kind, 'tokenizer': self.tokenizer_json,
         'special_tokens': self.special_tokens, 'config': self.config}))


Tokenizer = CharTokenizer | SubwordTokenizer | HFTokenizer
TOKENIZERS = ('char', 'subword', 'hf')


def train_tokenizer(kind: str, texts: Sequence[str], *,
                    vocab_size: int | None = None) -> Tokenizer:
  """Trains the tokenizer `kind` ('char' | 'subword') on `texts`.

  `vocab_size` is required for 'subword' (the size reached on enough text)
  and ignored for 'char' (the number of distinct characters + 3). An 'hf'
  tokenizer is a pretrained model's, never trained here.
  """
  if kind == 'char':
    return CharTokenizer.train(texts)
  if kind == 'subword':
    if vocab_size is None:
      raise ValueError('a subword tokenizer needs a vocab_size')
    return SubwordTokenizer.train(texts, vocab_size)
  if kind == 'hf':
    raise ValueError("tokenizer 'hf' is a pretrained model's own: start the "
                     'run from it with --config.init_from=hf:DIR (its '
                     'tokenizer.json is read), or use char or subword')
  raise ValueError(f'tokenizer {kind!r} is unknown; use one of '
                   f'{", ".join(TOKENIZERS)}')


def load_tokenizer(path: str) -> Tokenizer:
  """Reads back a tokenizer written by its `save(path)`, or a Hugging Face
  tokenizer.json (`HFTokenizer.from_file`)."""
  data = json.loads(epath.Path(path).read_text())
  if 'kind' not in data:  # A Hugging Face file: {'model': ..., ...}.
    return HFTokenizer.from_file(path)
  if data['kind'] == 'char':
    return CharTokenizer(data['chars'])
  if data['kind'] == 'hf':
    return HFTokenizer(data['tokenizer'], data['special_tokens'],
                       data.get('config'))
  return SubwordTokenizer(tokenizers.Tokenizer.from_str(data['tokenizer']))
