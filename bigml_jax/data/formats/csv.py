"""`csv`: a table with a header line, one row per example.

The numeric feature columns (`dataset.feature_columns`, default every column
but the label's) form one float64 vector per example, stored under
`dataset.input_key`; the column `dataset.label_key` holds class ids or class
names (numbered in sorted order). A file without a header line (or with
other lines above it, as scikit-learn's bundled CSVs have) is read with
`dataset.column_names` as its header after `dataset.skip_rows` lines.
"""

import csv
import math
from typing import Any

import numpy as np

from bigml_jax.data.formats.convert import Format, Split
from bigml_jax.errors import ConfigError


def _float(text: str) -> float:
  value = float(text)
  if math.isnan(value):
    raise ValueError
  return value


def _header(path: str, rows, options: dict[str, Any]) -> list[str]:
  header = (list(options['column_names']) if options['column_names']
            else next(rows, None))
  if not header:
    raise ConfigError(f'{path} is empty; a CSV file needs a header line '
                      '(or set dataset.column_names)')
  header = [h.strip() for h in header]
  duplicates = sorted({h for h in header if header.count(h) > 1})
  if duplicates:
    raise ConfigError(f'{path}: the header names column(s) '
                      f'{", ".join(duplicates)} more than once; give each '
                      'column its own name')
  return header


def _columns(path: str, header: list[str], options: dict[str, Any]
             ) -> tuple[list[int], int]:
  """(indices of the feature columns, index of the label column)."""
  label_key = options['label_key']
  wanted = list(options['feature_columns'] or
                [h for h in header if h != label_key])
  missing = [c for c in [label_key, *wanted] if c not in header]
  if missing:
    field = ('dataset.label_key' if missing[0] == label_key else
             'dataset.feature_columns')
    raise ConfigError(f'{path} has no column {missing[0]!r} (its columns: '
                      f'{", ".join(header)}); set {field}')
  return [header.index(c) for c in wanted], header.index(label_key)


def read(path: str, options: dict[str, Any]) -> Split:
  """The rows of the CSV file `path` as a feature matrix and labels."""
  try:
    with open(path, newline='', encoding='utf-8') as f:
      rows = csv.reader(f, delimiter=options['delimiter'])
      for _ in range(options['skip_rows']):
        next(rows, None)
      header = _header(path, rows, options)
      features, label = _columns(path, header, options)
      values, labels = [], []
      for row in rows:
        if not row:
          continue  # A blank line.
        if len(row) != len(header):
          raise ConfigError(
              f'{path} line {rows.line_num} has {len(row)} fields but the '
              f'header has {len(header)}; give every row one value per column')
        try:
          values.append([_float(row[i]) for i in features])
        except ValueError:
          i = next(i for i in features if not _is_number(row[i]))
          raise ConfigError(
              f'{path} line {rows.line_num}: column {header[i]!r} holds '
              f'{row[i]!r}, not a number; fill or drop the row, or leave the '
              'column out of dataset.feature_columns') from None
        labels.append((row[label].strip(), rows.line_num))
  except UnicodeDecodeError as e:
    raise ConfigError(f'{path} is not UTF-8 text ({e.reason} at byte '
                      f'{e.start}); save it as UTF-8 CSV') from None
  except csv.Error as e:
    raise ConfigError(f'{path} is not a CSV file Python can read ({e})'
                      ) from None
  if not values:
    raise ConfigError(f'{path} has a header but no rows; add the examples')
  return Split(path, {options['input_key']: np.array(values, np.float64)},
               _labels(path, labels, header[label]))


def _is_number(text: str) -> bool:
  try:
    _float(text)
  except ValueError:
    return False
  return True


def _labels(path: str, labels: list[tuple[str, int]], name: str) -> np.ndarray:
  """Label strings as numbers when they all are, else as class names; a
  missing one (empty, NaN) is an error naming its line."""
  for text, line in labels:
    if text == '' or text.lower() in ('nan', 'na', 'null', 'none'):
      raise ConfigError(f'{path} line {line}: label column {name!r} is '
                        f'missing ({text!r}); drop or fill the rows without '
                        'a label')
  if all(_is_number(text) for text, _ in labels):
    return np.array([float(text) for text, _ in labels])
  return np.array([text for text, _ in labels])


FORMAT = Format(read, {'label_key': 'label', 'input_key': 'image',
                       'feature_columns': None, 'column_names': None,
                       'skip_rows': 0, 'delimiter': ',', 'num_classes': None})
