"""What a sweep leaves in SWEEP_DIR: the table (trials.csv), the best
trial's flagfile (best.flags), plots (plots/*.png) and, in each trial's
workdir, its parameters for TensorBoard's HParams dashboard."""

import csv
import os
import statistics
import threading
import warnings
from typing import Any

from absl import logging
import optuna
from optuna.trial import TrialState

from bigml_jax.tuning import space as space_lib

CSV, FLAGS, PLOTS = 'trials.csv', 'best.flags', 'plots'


def counts(trial: optuna.trial.FrozenTrial) -> bool:
  """Whether a trial fills one of the sweep's N slots (and is in its
  table): all but those lost with their worker, or asked past N, which are
  failed without an error."""
  return trial.state != TrialState.FAIL or 'error' in trial.user_attrs


def _objective(trial: optuna.trial.FrozenTrial) -> float | None:
  """A finished trial's value; a pruned or running one's last report."""
  if trial.state == TrialState.COMPLETE:
    return trial.value
  if trial.intermediate_values:
    return trial.intermediate_values[max(trial.intermediate_values)]
  return None


def _note(trial: optuna.trial.FrozenTrial) -> str:
  attrs = trial.user_attrs
  notes = [attrs['note']] if 'note' in attrs else []
  if trial.state == TrialState.PRUNED and trial.intermediate_values:
    notes.append(f'eval at step {max(trial.intermediate_values)}')
  if 'retry_of' in attrs:
    notes.append(f'resumes trial {attrs["retry_of"]}, stopped before its end')
  if 'error' in attrs:
    notes.append(attrs['error'])
  return '; '.join(notes)


def table(study: optuna.Study, sweep) -> tuple[list[dict[str, Any]],
                                               list[str]]:
  """(rows, columns): one row per trial of the sweep: its parameters, the
  objective (`eval_METRIC`), its other last eval metrics, steps run, wall
  time of its process, Optuna state and a note."""
  trials = [t for t in study.get_trials(deepcopy=False) if counts(t)]
  objective = f'eval_{sweep.metric}'
  others = sorted({f'eval_{k}' for t in trials
                   for k in t.user_attrs.get('eval', {})} - {objective})
  columns = ['trial', *sweep.space, objective, *others, 'steps', 'wall_s',
             'state', 'note']
  rows = []
  for t in trials:
    row = {'trial': t.number, **{f: t.params.get(f) for f in sweep.space}}
    row[objective] = _objective(t)
    for k, v in t.user_attrs.get('eval', {}).items():
      if f'eval_{k}' != objective:
        row[f'eval_{k}'] = v
    row.update(steps=t.user_attrs.get('steps'), wall_s=t.user_attrs.get(
        'wall_s'), state=t.state.name, note=_note(t))
    rows.append(row)
  return rows, columns


def _cell(value: Any) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
  """The table as aligned text, for the console."""
  cells = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
  widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(line, widths)
                             ).rstrip() for line in cells)


def _replace(path: str, write) -> None:
  """Writes `path` through a temporary file: workers write it at once, and
  a reader never sees half of it."""
  tmp = f'{path}.{os.getpid()}.{threading.get_ident()}.tmp'
  write(tmp)
  os.replace(tmp, path)


def best_trial(study: optuna.Study, sweep) -> optuna.trial.FrozenTrial | None:
  done = [t for t in study.get_trials(deepcopy=False, states=(
      TrialState.COMPLETE,))]
  if not done:
    return None
  pick = min if sweep.mode == 'min' else max
  return pick(done, key=lambda t: (t.value, -t.number)
              if sweep.mode == 'max' else (t.value, t.number))


def flag_lines(sweep, trial: optuna.trial.FrozenTrial) -> list[str]:
  """An experiments.run flagfile that runs `trial` again, in SWEEP_DIR/best."""
  config_path, _, arg = sweep.config_file.partition(':')
  flagfile = os.path.abspath(os.path.join(sweep.workdir, FLAGS))
  return [
      f'# Trial {trial.number} of the sweep in {os.path.abspath(sweep.workdir)}'
      f': eval {sweep.metric} {trial.value!r} ({sweep.mode}).',
      f'# python -m experiments.run --flagfile={flagfile}',
      f'--config={os.path.abspath(config_path)}{":" + arg if arg else ""}',
      f'--workdir={os.path.abspath(os.path.join(sweep.workdir, "best"))}',
      *sweep.overrides,
      *(f'--config.{f}={space_lib.override_text(trial.params[f])}'
        for f in sweep.space)]


def write_plots(study: optuna.Study, sweep) -> list[str]:
  """Optimisation history, parameter importances and parallel coordinates
  as PNGs in SWEEP_DIR/plots; returns the paths written."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from optuna.visualization import matplotlib as vis  # pylint: disable=g-import-not-at-top
  out = os.path.join(sweep.workdir, PLOTS)
  os.makedirs(out, exist_ok=True)
  target = f'eval {sweep.metric}'
  plots = {
      'history': lambda: vis.plot_optimization_history(
          study, target_name=target),
      'importances': lambda: vis.plot_param_importances(study),
      'parallel': lambda: vis.plot_parallel_coordinate(
          study, target_name=target),
  }
  written = []
  for name, draw in plots.items():
    with warnings.catch_warnings():
      # Optuna marks its matplotlib plots experimental.
      warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
      try:
        figure = draw().figure
      except (ValueError, RuntimeError, ZeroDivisionError) as e:
        logging.info('plot %s not drawn: %s', name, e)
        continue
    figure.set_size_inches(9, 5.5)
    figure.tight_layout()
    path = os.path.join(out, f'{name}.png')
    _replace(path, lambda tmp, f=figure: f.savefig(tmp, format='png',
                                                   dpi=100))
    plt.close(figure)
    written.append(path)
  return written


def write_outputs(study: optuna.Study, sweep, *, plots: bool
                  ) -> tuple[list[dict[str, Any]], list[str]]:
  """Writes trials.csv, best.flags (once a trial completed) and, if
  `plots`, the plots; returns the table."""
  rows, columns = table(study, sweep)

  def write_csv(tmp):
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, columns)
      writer.writeheader()
      writer.writerows(rows)

  _replace(os.path.join(sweep.workdir, CSV), write_csv)
  best = best_trial(study, sweep)
  if best is not None:
    lines = flag_lines(sweep, best)

    def write_flags(tmp):
      with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')

    _replace(os.path.join(sweep.workdir, FLAGS), write_flags)
  if plots and best is not None:
    write_plots(study, sweep)
  return rows, columns


def summary(study: optuna.Study, sweep, rows: list[dict[str, Any]]
            ) -> list[str]:
  """Lines for the end of a sweep: counts, the best trial against the
  config as it is, and the time pruning saved."""
  states = [r['state'] for r in rows]
  lines = [f'{len(rows)} trials: ' + ', '.join(
      f'{states.count(s)} {s.lower()}' for s in
      ('COMPLETE', 'PRUNED', 'FAIL', 'RUNNING', 'WAITING') if s in states)]
  objective = f'eval_{sweep.metric}'
  best = best_trial(study, sweep)
  if best is not None:
    lines.append(f'best: trial {best.number}, {objective} {best.value:.4f}; '
                 'run it again: python -m experiments.run --flagfile='
                 f'{os.path.join(sweep.workdir, FLAGS)}')
  for r in rows:
    if r['note'].startswith('the config as it is') and r['state'] == 'COMPLETE':
      lines.append(f'the config as it is: trial {r["trial"]}, {objective} '
                   f'{r[objective]:.4f}')
  pruned = [r for r in rows if r['state'] == 'PRUNED' and r['wall_s']]
  complete = [r['wall_s'] for r in rows
              if r['state'] == 'COMPLETE' and r['wall_s']]
  if pruned and complete:
    full = statistics.median(complete)
    spent = sum(r['wall_s'] for r in rows if r['wall_s'])
    saved = sum(max(full - r['wall_s'], 0.0) for r in pruned)
    lines.append(
        f'pruning: {len(pruned)} trials stopped early, saving ~{saved:.0f} s '
        f'of trial time ({100 * saved / (spent + saved):.0f}% of '
        f'{spent + saved:.0f} s; a pruned trial\'s full run taken as the '
        f'median complete trial\'s {full:.1f} s)')
  return lines


def write_hparams(workdir: str, trial: optuna.trial.FrozenTrial,
                  metric: str) -> None:
  """The trial's parameters and state for TensorBoard's HParams dashboard,
  as an event file in its workdir beside the run's own (whose eval/*
  scalars are the dashboard's metrics)."""
  from tensorboardX import writer as tb_writer  # pylint: disable=g-import-not-at-top
  from tensorboardX.summary import hparams  # pylint: disable=g-import-not-at-top
  values = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in trial.params.items()}
  values.update(trial=trial.number, state=trial.state.name)
  names = set(trial.user_attrs.get('eval', {})) | {metric}
  writer = tb_writer.FileWriter(workdir, filename_suffix='.hparams')
  for summary_pb in hparams(values, {f'eval/{k}': 0.0 for k in sorted(names)}):
    writer.add_summary(summary_pb)
  writer.close()
