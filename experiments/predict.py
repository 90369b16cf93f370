"""Runs an exported model on a file of inputs and prints JSON lines.

  python -m experiments.predict --model=/tmp/bigml/default_export \
      --inputs=digit.png
  python -m experiments.predict --model=/tmp/bigml/gpt_export \
      --inputs=prompts.txt --temperature=0.8

--inputs is an image (PNG, JPEG, or .npy holding one image [H, W, C] or
many [N, H, W, C]), a directory of such files (in name order), or a text
file: one text or prompt per line (blank lines skipped). A classifier
prints {"input", "label", "index", "probabilities"} per input; a language
model {"input", "prompt", "completion"}. Needs neither flax nor the model
code. Every input is checked before any runs; a bad one ends in one line on
stderr ("error: ...") and exit code 1.
"""

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from absl import app
from absl import flags
import numpy as np

from bigml_jax import serving
from bigml_jax.errors import ConfigError
from bigml_jax.serving import inputs as inputs_lib

FLAGS = flags.FLAGS


def _define_flags():
  """The flags, defined when run as a program only: tests import its
  functions beside other CLIs that use the same names."""
  flags.DEFINE_string('model', None, 'Directory written by '
                      'python -m experiments.export.')
  flags.DEFINE_string('inputs', None, 'An image (.png, .jpg, .npy), '
                      'a directory of them, or a text file.')
  flags.DEFINE_integer('batch_size', 64, 'Inputs per model call.')
  flags.DEFINE_integer('max_new_tokens', None, 'Language '
                       'models: tokens to add (default: the '
                       "export's maximum).")
  flags.DEFINE_float('temperature', None, '0 = greedy (default: '
                     "the run's sampling config).")
  flags.DEFINE_integer('top_k', None, 'Draw from the k likeliest '
                       'tokens (0 = all).')
  flags.DEFINE_float('top_p', None, 'Draw from the likeliest tokens '
                     'that together reach this probability.')
  flags.DEFINE_integer('seed', None, 'PRNG seed of the draws.')
  flags.mark_flags_as_required(['model', 'inputs'])

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.npy')


def _image_file(path: str, shape: list[int]) -> Iterator[tuple[str, Any]]:
  with open(path, 'rb') as f:
    value = inputs_lib.decode_image_bytes(f.read())
  if isinstance(value, np.ndarray) and value.ndim == len(shape) + 1 or (
      isinstance(value, np.ndarray) and shape[-1] == 1 and
      value.shape[1:] == tuple(shape[:-1])):
    for i, image in enumerate(value):  # A stack of images.
      yield f'{path}[{i}]', image
  else:
    yield path, value


def read_inputs(path: str, model) -> list[tuple[str, Any]]:
  """(name, raw input) pairs from `path`, as the module docstring says."""
  if not os.path.exists(path):
    raise ConfigError(f'--inputs {path} does not exist')
  spec = model.manifest['input']
  if spec['kind'] == 'image':
    files = ([os.path.join(path, f) for f in sorted(os.listdir(path))
              if f.lower().endswith(IMAGE_SUFFIXES)]
             if os.path.isdir(path) else [path])
    if not files or not all(f.lower().endswith(IMAGE_SUFFIXES)
                            for f in files):
      raise ConfigError(
          f'--inputs {path} is not an image ({", ".join(IMAGE_SUFFIXES)}) '
          'or a directory of them; this model takes '
          f'{"x".join(map(str, spec["shape"]))} images')
    return [pair for f in files for pair in _image_file(f, spec['shape'])]
  if os.path.isdir(path) or path.lower().endswith(IMAGE_SUFFIXES):
    raise ConfigError(f'--inputs {path}: this model takes text, one input '
                      'per line of a text file')
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError:
    raise ConfigError(f'--inputs {path} is not UTF-8 text') from None
  return [(f'{path}:{i + 1}', line) for i, line in enumerate(lines)
          if line.strip()]


def predict_file(model_dir: str, inputs: str, *, batch_size: int = 64,
                 **options) -> list[dict[str, Any]]:
  """One JSON-able record per input of the file `inputs`."""
  if batch_size < 1:
    raise ConfigError(f'--batch_size must be >= 1, got {batch_size}')
  model = serving.load(model_dir)
  named = read_inputs(inputs, model)
  if not named:
    raise ConfigError(f'--inputs {inputs} holds no inputs')
  records = []
  try:
    if model.kind == 'classifier':
      rows = []
      for name, value in named:
        try:
          rows.append(model.preprocess_one(value))
        except serving.InputError as e:
          raise ConfigError(f'{name}: {e}') from None
      for start in range(0, len(rows), batch_size):
        out = model.logits(model.batch(rows[start:start + batch_size]))
        records += model.predictions(out['probabilities'])
      return [dict(input=name, **r) for (name, _), r in zip(named, records)]
    opts = model.options(**{k: v for k, v in options.items()
                            if v is not None})
    ids = []
    for name, prompt in named:
      try:
        ids.append(model.encode_prompt(prompt))
      except serving.InputError as e:
        raise ConfigError(f'{name}: {e}') from None
    for start in range(0, len(ids), batch_size):
      chunk = ids[start:start + batch_size]
      new = model.generate_ids(chunk, [opts] * len(chunk))
      records += [model.completion(named[start + i][1], i_ids, n)
                  for i, (i_ids, n) in enumerate(zip(chunk, new))]
  except serving.InputError as e:  # The options.
    raise ConfigError(str(e)) from None
  return [{'input': name, 'prompt': prompt, 'completion': text}
          for (name, prompt), text in zip(named, records)]


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    records = predict_file(
        FLAGS.model, FLAGS.inputs, batch_size=FLAGS.batch_size,
        max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
        top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  for record in records:
    print(json.dumps(record))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
