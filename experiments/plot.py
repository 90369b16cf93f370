"""Train and eval curves of one or more runs, in one PNG.

  python -m experiments.plot --workdirs=/tmp/bigml/a,/tmp/bigml/b \
      --metric=loss --out=curves.png [--labels=a,b] [--log_y]

Each run is one colour: its train rows dashed, its eval rows solid (from
the workdir's metrics.jsonl). A run ended by early stopping ends where it
stopped. Mistakes end in one line on stderr ("error: ...").
"""

import io
import json
import os
import sys

from absl import app
from absl import flags
import matplotlib
matplotlib.use('Agg')  # Files only, no display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from bigml_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top,wrong-import-position
from bigml_jax.workdir import write_atomically  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_list('workdirs', None, 'Workdirs of runs, comma-separated.')
  flags.DEFINE_list('labels', None, 'A legend label per workdir (default: '
                    'the workdirs\' names).')
  flags.DEFINE_string('metric', 'loss', 'A metric of the runs\' rows.')
  flags.DEFINE_string('out', None, 'The PNG to write.')
  flags.DEFINE_bool('log_y', False, 'A logarithmic y axis.')
  flags.DEFINE_string('title', None, 'The plot\'s title.')
  flags.mark_flags_as_required(['workdirs', 'out'])


def curves(workdir: str, metric: str) -> dict[str, tuple[list, list]]:
  """{'train': (steps, values), 'eval': (steps, values)} of `metric` in the
  run's metrics.jsonl (a split without it is left out)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise ConfigError(f'{workdir} has no metrics.jsonl; pass the workdir of '
                      'a run (python -m experiments.run ...)')
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  out = {}
  for split in ('train', 'eval'):
    points = [(r['step'], r[metric]) for r in rows
              if r.get('split') == split and metric in r]
    if points:
      out[split] = tuple(map(list, zip(*points)))
  if not out:
    names = sorted({k for r in rows for k in r} - {'step', 'split'})
    raise ConfigError(f'{path} has no {metric!r} rows; its metrics: '
                      f'{", ".join(names) or "none"}; pass one of them as '
                      '--metric')
  return out


def plot(workdirs: list[str], out: str, *, metric: str = 'loss',
         labels: list[str] | None = None, log_y: bool = False,
         title: str | None = None) -> None:
  """Writes the PNG `out` (whole, or not at all)."""
  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ConfigError(f'--labels has {len(labels)} names for '
                      f'{len(workdirs)} workdirs; give one per workdir')
  if not out.endswith('.png'):
    raise ConfigError(f'--out {out} does not end in .png; name a PNG file')
  runs = [curves(w, metric) for w in workdirs]
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for i, (run, label) in enumerate(zip(runs, labels)):
    color = matplotlib.colormaps['tab10'](i % 10)
    for split, style in (('train', '--'), ('eval', '-')):
      if split in run:
        ax.plot(*run[split], style, color=color, lw=1.4,
                label=f'{label} ({split})')
  ax.set_xlabel('step')
  ax.set_ylabel(metric)
  if log_y:
    ax.set_yscale('log')
  ax.set_title(title or f'{metric}: train (dashed) and eval (solid)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  write_atomically(out, buffer.getvalue())


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    plot(FLAGS.workdirs, FLAGS.out, metric=FLAGS.metric, labels=FLAGS.labels,
         log_y=FLAGS.log_y, title=FLAGS.title)
  except (ConfigError, OSError) as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  print(f'wrote {os.path.abspath(FLAGS.out)}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
