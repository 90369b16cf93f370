"""Exports a trained run as a Hugging Face model directory.

  python -m experiments.export_hf --workdir=/tmp/bigml/bert_finetune_hf \
      --out=/tmp/bigml/bert_finetune_hf_export

Reads the run's config.json, tokenizer.json and newest checkpoint (or
--step) and writes config.json, model.safetensors, tokenizer.json and
tokenizer_config.json to --out, a new directory, which transformers reads
with `AutoModelForSequenceClassification.from_pretrained(OUT)` (a BERT
classifier), `AutoModelForMaskedLM` (a BERT masked LM) or
`AutoModelForCausalLM` (a GPT: GPT2LMHeadModel) and
`AutoTokenizer.from_pretrained(OUT)`. Models HF has an architecture for:
BERT started from a Hugging Face checkpoint (post-LN, pooler, ...) and
GPTs with learned positions; others are refused. Mistakes end in one line
on stderr ("error: ...") and exit code 1; --out is written whole or not at
all.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from bigml_jax import checkpoint as ckpt
from bigml_jax.config import load_saved_config
from bigml_jax.data import pipeline
from bigml_jax.errors import ConfigError
from bigml_jax.interop import hf
from bigml_jax.tasks import build_task


def _define_flags() -> None:
  # Only when run as a program: a test or notebook may import this module
  # beside experiments.sample, which defines --workdir too.
  flags.DEFINE_string('workdir', None, 'Workdir of a trained run (python -m '
                      'experiments.run ...).')
  flags.DEFINE_string('out', None, 'New directory to write the Hugging Face '
                      'model to.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.mark_flags_as_required(['workdir', 'out'])


def _load_run(workdir: str, step: int | None):
  """(model, params, tokenizer) of the run in `workdir` at `step` (default:
  its newest checkpoint). The one place to swap for the training package's
  `load_run` once it exists."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise ConfigError(f'{workdir} holds no config.json; pass the --workdir '
                      'of a run')
  config = load_saved_config(workdir)
  source, what = os.path.join(workdir, 'checkpoints'), '--workdir'
  ckpt.run_checkpoints(source, what)  # One clear line if there is none.
  if step is not None:
    source, what = os.path.join(source, str(step)), '--step'
    ckpt.run_checkpoints(source, what)
  sources = pipeline.load_sources(config.dataset, workdir)
  task = build_task(config, **sources.fields)
  example = pipeline.make_preprocess(config.dataset)(sources.train[0])
  example = jax.tree.map(lambda x: np.asarray(x)[None], example)
  params = jax.jit(task.init)(jax.random.key(0), example)
  params, _ = ckpt.load_params(source, params, what=what)
  return task.model, params, sources.tokenizer


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the run in `workdir` to the new directory `out` (see the module
  docstring); returns its absolute path."""
  out_dir = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or
                                  os.listdir(out_dir)):
    # Before anything is loaded: the answer does not depend on the run.
    raise ConfigError(f'--out {out_dir} exists and is not empty; pass a new '
                      'directory (nothing was written)')
  model, params, tokenizer = _load_run(workdir, step)
  return hf.save_pretrained(model, params, tokenizer, out_dir)


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    out = export(flags.FLAGS.workdir, flags.FLAGS.out, flags.FLAGS.step)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  print(f'wrote {out}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
