"""Samples text from a trained language model (a run with task='lm').

  python -m experiments.sample --workdir=/tmp/bigml/gpt_kjv \
      --prompt='And God said' --num_samples=3 --temperature=0.8

Reads the run's config.json, tokenizer.json and its newest checkpoint (or
--step), continues the prompt (after EOS, where documents start) and prints
each sample under a '--- i' line. A sample ends at the model's EOS or at
--num_tokens (default: to the end of the run's training window). Mistakes
end in one line on stderr ("error: ...") and exit code 1.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax import config as config_lib
from bigml_jax import load_run
from bigml_jax.errors import ConfigError
from bigml_jax.models import sampling


def _define_flags() -> None:
  # Only as a program: tests import several CLIs, whose flags would clash.
  flags.DEFINE_string('workdir', None, 'Workdir of a language-model '
                      'run (python -m experiments.run ...).')
  flags.DEFINE_string('prompt', '', 'Text to continue.')
  flags.DEFINE_integer('num_samples', 4, 'Samples to draw.')
  flags.DEFINE_integer('num_tokens', None, 'Tokens to add (default: to the '
                       "end of the run's training window).")
  flags.DEFINE_float('temperature', 1.0, '0 = greedy.')
  flags.DEFINE_integer('top_k', 0, 'Draw from the k likeliest tokens '
                       '(0 = all).')
  flags.DEFINE_float('top_p', 1.0, 'Draw from the likeliest tokens '
                     'that together reach this probability (1 = all).')
  flags.DEFINE_integer('seed', 0, 'PRNG seed of the draws.')
  flags.DEFINE_string('step', None, "Checkpoint step, or 'best' (a run "
                      'with keep_best); default: the newest.')
  flags.mark_flags_as_required(['workdir'])


def sample_texts(workdir: str, prompt: str = '', *, num_samples: int = 4,
                 num_tokens: int | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 step: int | str | None = None) -> list[str]:
  """The prompt, continued `num_samples` times by the run in `workdir`."""
  if num_samples < 1 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
    raise ConfigError(f'--num_samples must be >= 1, --temperature and '
                      f'--top_k >= 0 and --top_p in (0, 1] (got {num_samples}, '
                      f'{temperature}, {top_k}, {top_p})')
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.isfile(os.path.join(workdir, config_lib.CONFIG_FILE)):
    # Before the checkpoints: no checkpoint makes a classifier sample.
    task = config_lib.load_saved_config(workdir).get('task', 'classification')
    if task != 'lm':
      raise ConfigError(f'{workdir} is a {task} run; sampling needs a '
                        "language model's (task='lm')")
  run = load_run(workdir, step)
  task, tokenizer = run.task, run.tokenizer
  max_len = task.model.max_len
  eos_id, fill_id = task.eos_and_fill_ids()
  ids = np.concatenate([[eos_id], tokenizer.encode(prompt)])
  if tokenizer.decode(ids) != prompt:
    unseen = sorted(set(prompt) - set(tokenizer.decode(ids)))
    raise ConfigError(f'the prompt has characters the model never saw in '
                      f'training ({"".join(unseen)!r}); leave them out')
  room = max_len - len(ids)
  if room < 1 or (num_tokens is not None and not 0 < num_tokens <= room):
    raise ConfigError(
        f'the prompt is {len(ids) - 1} tokens and --num_tokens must be 1 to '
        f"{max(room, 0)}: the model's max_len is {max_len}, EOS first")
  if num_tokens is None:
    num_tokens = max(min((task.sample_length or max_len) - len(ids), room), 1)
  tokens = sampling.generate(
      task.model, run.params, jnp.asarray(np.tile(ids, (num_samples, 1))),
      jax.random.key(seed), num_tokens=num_tokens, temperature=temperature,
      top_k=top_k, top_p=top_p, stop_id=eos_id, pad_id=fill_id)
  return [tokenizer.decode(np.asarray(row)) for row in tokens]


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    texts = sample_texts(
        flags.FLAGS.workdir, flags.FLAGS.prompt, num_samples=flags.FLAGS.num_samples,
        num_tokens=flags.FLAGS.num_tokens, temperature=flags.FLAGS.temperature,
        top_k=flags.FLAGS.top_k, top_p=flags.FLAGS.top_p, seed=flags.FLAGS.seed,
        step=flags.FLAGS.step)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  for i, text in enumerate(texts):
    print(f'--- {i}\n{text}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
