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

from bigml_jax import load_run
from bigml_jax.errors import ConfigError
from bigml_jax.interop import hf


def _define_flags() -> None:
  # Only when run as a program: a test or notebook may import this module
  # beside experiments.sample, which defines --workdir too.
  flags.DEFINE_string('workdir', None, 'Workdir of a trained run (python -m '
                      'experiments.run ...).')
  flags.DEFINE_string('out', None, 'New directory to write the Hugging Face '
                      'model to.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.mark_flags_as_required(['workdir', 'out'])


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the run in `workdir` to the new directory `out` (see the module
  docstring); returns its absolute path."""
  out_dir = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or
                                  os.listdir(out_dir)):
    # Before anything is loaded: the answer does not depend on the run.
    raise ConfigError(f'--out {out_dir} exists and is not empty; pass a new '
                      'directory (nothing was written)')
  run = load_run(workdir, step)
  return hf.save_pretrained(run.task.model, run.params, run.tokenizer,
                            out_dir)


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
