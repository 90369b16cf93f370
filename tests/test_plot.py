"""experiments.plot: the curves it reads from metrics.jsonl, its PNG, and
its one-line refusals."""

import json

from PIL import Image
import pytest

from bigml_jax.errors import ConfigError
from experiments import plot


def _run(path, rows):
  path.mkdir()
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return str(path)


def test_curves_and_png(tmp_path):
  a = _run(tmp_path / 'a', [
      {'step': 10, 'split': 'train', 'loss': 2.0, 'accuracy': 0.1},
      {'step': 20, 'split': 'train', 'loss': 1.0, 'accuracy': 0.5},
      {'step': 20, 'split': 'eval', 'loss': 1.5, 'accuracy': 0.4}])
  b = _run(tmp_path / 'b', [{'step': 5, 'split': 'eval', 'loss': 3.0}])
  assert plot.curves(a, 'loss') == {'train': ([10, 20], [2.0, 1.0]),
                                    'eval': ([20], [1.5])}
  assert plot.curves(b, 'loss') == {'eval': ([5], [3.0])}
  out = tmp_path / 'curves.png'
  plot.plot([a, b], str(out), metric='loss', log_y=True)
  with Image.open(out) as image:
    assert image.format == 'PNG' and image.size == (840, 540)
  with pytest.raises(ConfigError, match="no 'perplexity' rows; its metrics: "
                     'accuracy, loss; pass one of them as --metric'):
    plot.curves(a, 'perplexity')
  with pytest.raises(ConfigError, match='has no metrics.jsonl'):
    plot.curves(str(tmp_path), 'loss')
  with pytest.raises(ConfigError, match='--labels has 1 names for 2 workdirs'):
    plot.plot([a, b], str(out), labels=['x'])
  with pytest.raises(ConfigError, match='does not end in .png'):
    plot.plot([a], str(tmp_path / 'x.jpg'))
