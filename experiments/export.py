"""Exports a trained run as one self-contained artifact (jax.export).

  python -m experiments.export --workdir=/tmp/bigml/default \
      --out=/tmp/bigml/default_export [--step=N] [--quantize=int8]

A classifier's forward pass, or a language model's generation (prefill +
cached decode steps, at most --max_new_tokens new tokens), is written as
serialized StableHLO for cpu, cuda and tpu (--platforms), with the
parameters beside it and what inference needs: tokenizer, preprocessing,
class names, input signature, source run and step, versions. Load it with
`bigml_jax.serving.load(OUT)`, or use `experiments.predict` and
`experiments.serve`. Mistakes end in one line on stderr ("error: ...") and
exit code 1; --out is written whole or not at all.
"""

import os
import sys

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from bigml_jax import load_run
from bigml_jax.errors import ConfigError
from bigml_jax.serving import export as export_lib

FLAGS = flags.FLAGS


def _define_flags():
  """The flags, defined when run as a program only: tests import its
  functions beside other CLIs that use the same names."""
  flags.DEFINE_string('workdir', None, 'Workdir of a trained run '
                      '(python -m experiments.run ...).')
  flags.DEFINE_string('out', None, 'Directory to write (must not exist '
                      'or be empty).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the '
                       'newest).')
  flags.DEFINE_enum('quantize', 'none', ['none', 'int8'],
                    'int8: weight-only, one scale per channel.')
  flags.DEFINE_integer(
      'max_new_tokens', None, 'Language models: the most tokens one call adds '
      "(default: half the model's max_len).")
  flags.DEFINE_list('platforms', list(export_lib.PLATFORMS),
                    'Platforms to lower for.')
  flags.mark_flags_as_required(['workdir', 'out'])


def export_workdir(workdir: str, out: str, *, step: int | None = None,
                   quantize: str | None = None,
                   max_new_tokens: int | None = None,
                   platforms=export_lib.PLATFORMS) -> dict:
  """Exports the run in `workdir` (its newest checkpoint, or `step`) to
  `out`; returns the manifest."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  unknown = sorted(set(platforms) - {'cpu', 'cuda', 'rocm', 'tpu'})
  if unknown or not platforms:
    raise ConfigError(f'--platforms takes cpu, cuda, rocm and tpu, got '
                      f'{",".join(platforms) or "none"}')
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConfigError(f'--out {out} already exists and is not empty; pass a '
                      'new directory (nothing there was changed)')
  run = load_run(workdir, step, portable=True)
  class_names = (run.class_names if run.config.task == 'classification'
                 else None)
  return export_lib.export_run(run, out, class_names=class_names,
                               quantize=quantize,
                               max_new_tokens=max_new_tokens,
                               platforms=tuple(platforms))


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  tfds.disable_progress_bar()
  try:
    manifest = export_workdir(
        FLAGS.workdir, FLAGS.out, step=FLAGS.step,
        quantize=None if FLAGS.quantize == 'none' else FLAGS.quantize,
        max_new_tokens=FLAGS.max_new_tokens, platforms=FLAGS.platforms)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  params = manifest['params']
  print(f'exported {manifest["source"]["workdir"]} step '
        f'{manifest["source"]["step"]} ({manifest["kind"]}, '
        f'{params["count"]:,} parameters, {params["stored_bytes"]:,} bytes'
        f'{", int8" if params["quantization"] else ""}) to '
        f'{os.path.abspath(FLAGS.out)} for {", ".join(manifest["platforms"])}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
