"""MetricWriter: the rows a resumed run keeps."""

import json

from bigml_jax.metrics import MetricWriter


def test_resume_drops_rows_past_the_checkpoint_and_a_partial_line(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  rows = [{'step': s, 'split': 'train', 'loss': 1.0 / s} for s in (1, 20, 40)]
  rows.append({'step': 40, 'split': 'eval', 'loss': 0.5})
  rows.append({'step': 60, 'split': 'train', 'loss': 0.1})
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows) +
                  '{"step": 80, "spl')  # Killed mid-write.
  writer = MetricWriter(str(tmp_path), initial_step=40)
  writer.write(41, 'train', {'loss': 0.25})
  writer.close()
  got = [json.loads(l) for l in path.read_text().splitlines()]
  assert got == rows[:4] + [{'step': 41, 'split': 'train', 'loss': 0.25}]


def test_a_fresh_run_keeps_nothing_of_a_run_killed_before_its_first_save(
    tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "split": "train"}\n')
  MetricWriter(str(tmp_path)).close()
  assert (tmp_path / 'metrics.jsonl').read_text() == ''


def test_a_row_that_lost_its_newline_is_not_joined_to_the_next(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "split": "train"}')
  writer = MetricWriter(str(tmp_path), initial_step=2)
  writer.write(3, 'train', {'loss': 1.0})
  writer.close()
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [
      1, 2, 3]
