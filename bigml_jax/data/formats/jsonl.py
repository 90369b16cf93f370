"""`jsonl`: one JSON object per line, with a text and (usually) a label.

The text is the field `dataset.text_key` (default 'text'), tokenized like
the shipped text datasets (`dataset.tokenizer`, `dataset.max_length`); the
label is the field `dataset.label_key` (default 'label'), class ids or class
names (numbered in sorted order). `dataset.label_key=''` reads text alone,
for a language model. Blank lines are skipped.
"""

import json
from typing import Any

import numpy as np

from bigml_jax.data.formats.convert import Format, Split
from bigml_jax.errors import ConfigError


def _field(path: str, line: int, record: dict[str, Any], key: str,
           option: str) -> Any:
  if key not in record or record[key] is None:
    raise ConfigError(f'{path} line {line} has no field {key!r} (its fields: '
                      f'{", ".join(sorted(record))}); set dataset.{option} '
                      'or fix the line')
  return record[key]


def read(path: str, options: dict[str, Any]) -> Split:
  """The texts (and labels) of the JSON-lines file `path`."""
  text_key, label_key = options['text_key'], options['label_key']
  texts, labels = [], []
  try:
    with open(path, encoding='utf-8') as f:
      for line, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        try:
          record = json.loads(raw)
        except json.JSONDecodeError as e:
          raise ConfigError(f'{path} line {line} is not JSON ({e.msg}); write '
                            'one JSON object per line') from None
        if not isinstance(record, dict):
          raise ConfigError(f'{path} line {line} is not a JSON object; write '
                            'one {"text": ..., "label": ...} per line')
        text = _field(path, line, record, text_key, 'text_key')
        if not isinstance(text, str):
          raise ConfigError(f'{path} line {line}: field {text_key!r} is not '
                            'a string')
        texts.append(text)
        if label_key:
          label = _field(path, line, record, label_key, 'label_key')
          if isinstance(label, (bool, list, dict)):
            raise ConfigError(f'{path} line {line}: label {label!r} is not a '
                              'class id or a class name')
          labels.append(label)
  except UnicodeDecodeError as e:
    raise ConfigError(f'{path} is not UTF-8 text ({e.reason} at byte '
                      f'{e.start}); save it as UTF-8') from None
  if not texts:
    raise ConfigError(f'{path} holds no JSON lines; add the examples')
  kinds = {isinstance(label, str) for label in labels}
  if len(kinds) > 1:
    raise ConfigError(f'{path}: labels mix numbers and strings; use class ids '
                      'or class names, not both')
  features = {text_key: np.array(texts, dtype=object)}
  if not label_key:
    return Split(path, features)
  return Split(path, features, np.array(labels, dtype=object if True in kinds
                                        else np.float64))


FORMAT = Format(read, {'text_key': 'text', 'label_key': 'label',
                       'num_classes': None})
