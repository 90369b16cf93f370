"""Why did the model say that: pictures of a trained run's attributions,
attention maps and embedding neighbours.

  python -m experiments.explain --workdir=/tmp/bigml/default \
      --method=integrated_gradients
  python -m experiments.explain --workdir=/tmp/bigml/vit_digits \
      --method=attention
  python -m experiments.explain --workdir=/tmp/bigml/bert_fortunes \
      --method=integrated_gradients --inputs=my_lines.txt

Methods: saliency, gradient_x_input, smoothgrad, integrated_gradients,
occlusion (images only) explain a classifier's logit of every class;
attention draws each layer's and head's weights and their rollout; neighbours
lists the nearest tokens of a text run's embedding table by cosine and draws
them projected by PCA. Inputs are eval examples (one of each class in turn,
--num_examples of them) or --inputs: an image file (resized to the run's
images) or a .npy [N, H, W, C] for image runs; a text file, one example per
line, for text runs (for neighbours: one word, or a formula `a - b + c`, per
line).

Writes into --out (default WORKDIR/explain): METHOD.png (each input beside
its heat map per class; for attention, attention_rollout.png and one
attention_exampleN.png of every layer and head per example; for neighbours,
the projection), for text runs METHOD.html (each token coloured), and
METHOD.json with the raw numbers. The run's checkpoint, config and data are
only read. Mistakes end in one line on stderr ("error: ...") and exit code 1.
"""

import json
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from bigml_jax import explain
from bigml_jax import load_run
from bigml_jax.config import load_saved_config
from bigml_jax.data import pipeline
from bigml_jax.data import text as text_lib
from bigml_jax.errors import ConfigError
from bigml_jax.explain import tokens as tokens_lib
from bigml_jax.parallel import mesh as mesh_lib
from experiments import explain_pictures as pictures

ATTRIBUTIONS = ('saliency', 'gradient_x_input', 'smoothgrad',
                'integrated_gradients', 'occlusion')
METHODS = ATTRIBUTIONS + ('attention', 'neighbours')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff')
# Gradients of at most this many noisy or path copies of the batch per model
# call: a BERT batch's 64 integrated-gradient steps at once would hold 64x
# its activations.
POINTS_PER_CALL = 16


def _define_flags() -> None:
  # Only as a program: tests import several CLIs, whose flags would clash.
  flags.DEFINE_string('workdir', None, 'Workdir of a trained run '
                      '(python -m experiments.run ...).')
  flags.DEFINE_enum('method', None, METHODS, 'What to explain.')
  flags.DEFINE_string('step', None, "Checkpoint step, or 'best' (a run "
                      'with keep_best); default: the newest.')
  flags.DEFINE_integer('num_examples', 8, 'Eval examples to '
                       'explain (tokens, for neighbours).')
  flags.DEFINE_string('inputs', None, 'Your own inputs instead: an '
                      'image file or .npy (image runs), a text file '
                      'of lines (text runs).')
  flags.DEFINE_string('out', None, 'Output directory (default '
                      'WORKDIR/explain).')
  flags.DEFINE_integer('steps', 64, 'integrated_gradients: gradient '
                       'evaluations along the path from the baseline '
                       '(zeros: a black image, a zero embedding).')
  flags.DEFINE_integer('num_samples', 25, 'smoothgrad: noisy '
                       'copies per input.')
  flags.DEFINE_float('noise_level', 0.15, 'smoothgrad: noise sigma '
                     "as a fraction of each input's range.")
  flags.DEFINE_integer('patch', 2, 'occlusion: side of the square '
                       'window set to zero, in pixels.')
  flags.DEFINE_integer('num_neighbours', 8, 'neighbours: '
                       'tokens listed per query.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed (smoothgrad noise).')
  flags.mark_flags_as_required(['workdir', 'method'])


# Inputs

def _is_text(run) -> bool:
  return run.tokenizer is not None


def _window(run) -> int:
  """Token positions the model reads (an LM's windows hold one more)."""
  length = run.preprocess(run.sources.eval[0])[pipeline.TOKENS_KEY].shape[-1]
  return length - 1 if run.config.task == 'lm' else length


def _eval_examples(run, n: int) -> tuple[np.ndarray, np.ndarray | None]:
  """(inputs, labels): n eval examples, one of each class in turn."""
  source = run.sources.eval
  n = min(n, len(source))
  first = run.preprocess(source[0])
  if 'label' not in first:  # An LM's text windows.
    indices = list(range(n))
  else:
    # Read labels until every class has its share (or the split ends).
    share = -(-n // len(run.class_names))
    by_class = [[] for _ in run.class_names]
    for i in range(len(source)):
      members = by_class[int(run.preprocess(source[i])['label'])]
      if len(members) < share:
        members.append(i)
        if sum(map(len, by_class)) == share * len(by_class):
          break
    indices = []
    while len(indices) < n:
      for members in by_class:
        if members and len(indices) < n:
          indices.append(members.pop(0))
  batch = [run.preprocess(source[int(i)]) for i in indices]
  key = pipeline.TOKENS_KEY if _is_text(run) else 'image'
  inputs = np.stack([b[key] for b in batch])
  if run.config.task == 'lm':
    inputs = inputs[:, :-1]
  labels = (np.array([int(b['label']) for b in batch]) if 'label' in first
            else None)
  return inputs, labels


def _image_inputs(run, path: str) -> np.ndarray:
  """[N, H, W, C] float32 from an image file or a .npy, as the run's."""
  shape = run.preprocess(run.sources.eval[0])['image'].shape
  h, w, c = shape
  if path.lower().endswith('.npy'):
    array = np.load(path, allow_pickle=False)
    if array.ndim in (2, 3) and c == 1 and array.shape[-2:] == (h, w):
      array = array[..., None]
    if array.ndim == 3:
      array = array[None]
    if array.ndim != 4 or array.shape[1:] != shape:
      raise ConfigError(f'--inputs {path} holds shape {array.shape}; this '
                        f'run reads images {h}x{w}x{c}: save [N, {h}, {w}, '
                        f'{c}] or [{h}, {w}, {c}]')
  elif path.lower().endswith(IMAGE_SUFFIXES):
    if c not in (1, 3):
      raise ConfigError(f'this run reads {c}-channel images; pass them as '
                        f'a .npy [N, {h}, {w}, {c}]')
    with Image.open(path) as image:
      image = image.convert('L' if c == 1 else 'RGB')
      array = np.asarray(image.resize((w, h), Image.Resampling.BOX))
    array = array.reshape(1, h, w, c)
  else:
    raise ConfigError(f'--inputs {path}: an image run reads an image file '
                      f'({", ".join(IMAGE_SUFFIXES)}) or a .npy')
  return run.preprocess({'image': array, 'label': np.zeros(len(array))}
                        )['image']


def _read_lines(path: str) -> list[str]:
  try:
    with open(path, encoding='utf-8') as f:
      lines = [line.rstrip('\n') for line in f]
  except UnicodeDecodeError:
    raise ConfigError(f'--inputs {path} is not UTF-8 text; a text run reads '
                      'a text file, one example per line') from None
  lines = [line for line in lines if line.strip()]
  if not lines:
    raise ConfigError(f'--inputs {path} has no non-empty line')
  return lines


def _encode(run, text: str, where: str) -> np.ndarray:
  ids = run.tokenizer.encode(text)
  if run.tokenizer.decode(ids) != text:
    unseen = sorted(set(text) - set(run.tokenizer.decode(ids)))
    raise ConfigError(f'{where} has characters the model never saw in '
                      f'training ({"".join(unseen)!r}); leave them out')
  return ids


def _text_inputs(run, path: str) -> np.ndarray:
  """[N, window] token ids, one line each, padded as in training."""
  window = _window(run)
  rows = []
  for i, line in enumerate(_read_lines(path), 1):
    ids = _encode(run, line, f'--inputs {path} line {i}')
    if run.config.task == 'lm':
      ids = np.concatenate([[text_lib.EOS_ID], ids])  # Documents start so.
    if len(ids) > window:
      raise ConfigError(f'--inputs {path} line {i} is {len(ids)} tokens; '
                        f'the model reads at most {window}: shorten it')
    row = np.full(window, text_lib.PAD_ID, np.int32)
    row[:len(ids)] = ids
    rows.append(row)
  return np.stack(rows)


def _inputs(run, path: str | None, n: int):
  if path is None:
    return _eval_examples(run, n)
  if not os.path.isfile(path):
    raise ConfigError(f'--inputs {path} is not a file')
  return (_text_inputs(run, path) if _is_text(run)
          else _image_inputs(run, path)), None


def _on_mesh(run, x: np.ndarray) -> tuple[jax.Array, int]:
  """x padded to a multiple of the data-parallel devices and sharded over
  them, and its real length."""
  n, dp = len(x), mesh_lib.data_parallel_size(run.mesh)
  padded = np.concatenate([x, np.repeat(x[-1:], -n % dp, axis=0)])
  return jax.device_put(padded, mesh_lib.batch_sharding(run.mesh)), n


# Compute

def _check_method(workdir: str, method: str) -> None:
  """Refuses a method the run's model cannot give, from its config alone
  (before the data and checkpoint are read)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise ConfigError(f'{workdir} holds no config.json; pass the --workdir '
                      'of a run (python -m experiments.run ...)')
  config = load_saved_config(workdir)
  model_name = config.model.name
  task_name = config.get('task', 'classification')
  text = os.path.isfile(os.path.join(workdir, pipeline.TOKENIZER_FILE))
  if task_name == 'gan':
    raise ConfigError(f'{workdir} is a GAN run; explain reads classifiers '
                      'and language models')
  if method == 'attention':
    if model_name not in explain.ATTENTION_MODELS:
      raise ConfigError(
          f"model {model_name!r} has no attention; --method=attention needs "
          f'one of {", ".join(explain.ATTENTION_MODELS)}')
  elif method == 'neighbours':
    if not text:
      raise ConfigError(
          f"model {model_name!r} reads images and has no token embedding "
          'table; --method=neighbours needs a text run (e.g. bert, gpt, '
          'rnn_classifier)')
  elif task_name != 'classification':
    raise ConfigError(
        f'--method={method} explains a classifier; this run is a '
        f"{task_name!r} run: use --method=attention or neighbours")
  elif method == 'occlusion' and text:
    raise ConfigError('--method=occlusion is for image runs; for text use '
                      'integrated_gradients or gradient_x_input')


def _method_fn(method: str, settings: dict):
  """The attribution function with the CLI's settings for `method`."""
  fn = explain.METHODS[method]
  kwargs = {
      'smoothgrad': dict(num_samples=settings['num_samples'],
                         noise_level=settings['noise_level'],
                         samples_per_batch=POINTS_PER_CALL),
      'integrated_gradients': dict(steps=settings['steps'],
                                   steps_per_batch=POINTS_PER_CALL),
      'occlusion': dict(patch=settings['patch']),
  }.get(method, {})
  if method == 'smoothgrad':
    rng = jax.random.key(settings['seed'])
    return lambda f, p, x, t: fn(f, p, x, t, rng, **kwargs)
  return lambda f, p, x, t: fn(f, p, x, t, **kwargs)


def attribute(run, method: str, inputs: jax.Array, settings: dict):
  """(logits [B, C], logits at the zero baseline [B, C], attributions
  [C, B, ...] with each class as the target; for text, one number per
  token [C, B, L])."""
  model = run.task.model
  attribute_fn = _method_fn(method, settings)
  num_classes = len(run.class_names)

  @jax.jit
  def compute(params, x):
    if _is_text(run):
      apply_fn = tokens_lib.embedding_apply_fn(model, x)
      x = tokens_lib.token_embeddings(model, params, x)
    else:
      apply_fn = lambda p, images: model.apply({'params': p}, images,
                                               train=False)
    logits = apply_fn(params, x)

    def for_class(c):
      target = jnp.full(x.shape[:1], c, jnp.int32)
      return attribute_fn(apply_fn, params, x, target)

    # One class at a time: all at once would hold C times the activations.
    per_class = jax.lax.map(for_class, jnp.arange(num_classes))
    if _is_text(run):
      per_class = jax.vmap(tokens_lib.per_token)(per_class)
    return logits, apply_fn(params, jnp.zeros_like(x)), per_class

  return compute(run.params, inputs)


def _query_weights(run, inputs: np.ndarray, length: int) -> np.ndarray:
  """[B, L]: the positions the model's output reads (see
  `explain.pooled_relevance`)."""
  b = len(inputs)
  weights = np.ones((b, length), np.float32)
  if _is_text(run):
    weights = (inputs != text_lib.PAD_ID).astype(np.float32)
    if run.config.task == 'lm':  # The next token after the last real one.
      last = weights.sum(-1).astype(int) - 1
      weights = np.eye(length, dtype=np.float32)[last]
  if run.config.model.get('pooling') == 'cls':
    weights = np.zeros((b, length), np.float32)
    weights[:, 0] = 1.0
  return weights


def attend(run, inputs: jax.Array):
  """(logits, [weights [B, H, L, S] per layer], rollout [B, L, L])."""
  model = run.task.model

  @jax.jit
  def compute(params, x):
    logits, weights = explain.attention_maps(model, params, x)
    return logits, weights, explain.attention_rollout(weights)

  return compute(run.params, inputs)


# Methods

def _title(run, labels, probs, i) -> str:
  names = run.class_names
  predicted = int(probs[i].argmax())
  head = f'label {names[labels[i]]}, ' if labels is not None else ''
  return f'{head}says {names[predicted]} ({probs[i, predicted]:.2f})'


def _tokens(run, ids: np.ndarray) -> list[str]:
  """The text of each real token (up to the first padding)."""
  real = ids[:int((ids != text_lib.PAD_ID).sum())]
  return [run.tokenizer.decode([int(t)]) for t in real]


def explain_attributions(run, method, inputs, labels, out,
                         settings) -> list[str]:
  x, n = _on_mesh(run, inputs)
  logits, baseline_logits, attr_CxB = jax.tree.map(
      np.asarray, attribute(run, method, x, settings))
  os.makedirs(out, exist_ok=True)  # Only now: refused input writes nothing.
  logits, baseline_logits = logits[:n], baseline_logits[:n]
  attr_CxB = attr_CxB[:, :n]
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  predicted = probs.argmax(-1)
  names = run.class_names
  titles = [_title(run, labels, probs, i) for i in range(n)]
  record = {'workdir': run.workdir, 'step': run.step, 'method': method,
            'classes': names, 'examples': []}
  for i in range(n):
    tokens = _tokens(run, inputs[i]) if _is_text(run) else None
    example = {
        'tokens' if tokens else 'input':
            tokens or inputs[i].tolist(),
        'label': None if labels is None else int(labels[i]),
        'predicted': int(predicted[i]), 'logits': logits[i].tolist(),
        'probabilities': probs[i].tolist(),
        'attributions': {names[c]: attr_CxB[c, i, :len(tokens)].tolist()
                         if tokens else attr_CxB[c, i].tolist()
                         for c in range(len(names))}}
    if method == 'integrated_gradients':  # Each class's sum comes to
      example['baseline_logits'] = baseline_logits[i].tolist()  # the gap.
    record['examples'].append(example)
  heading = f'{method} (step {run.step})'
  if _is_text(run):
    rows = [(f'{titles[i]}: why {names[predicted[i]]}', e['tokens'],
             np.asarray(e['attributions'][names[predicted[i]]]))
            for i, e in enumerate(record['examples'])]
    heading += ': red tokens push the predicted class up, blue down'
    pictures.token_colours(rows, os.path.join(out, f'{method}.png'), True)
    pictures.token_page(rows, heading, os.path.join(out, f'{method}.html'),
                        True)
    written = [f'{method}.png', f'{method}.html']
  else:
    pictures.image_attributions(
        inputs, titles, names, predicted, attr_CxB,
        heading + ': each input, then its heat map per class',
        os.path.join(out, f'{method}.png'))
    written = [f'{method}.png']
  _write_json(record, os.path.join(out, f'{method}.json'))
  return written + [f'{method}.json']


def explain_attention(run, inputs, labels, out) -> list[str]:
  x, n = _on_mesh(run, inputs)
  logits, weights, rollout = attend(run, x)
  os.makedirs(out, exist_ok=True)
  weights = [np.asarray(w)[:n] for w in weights]
  rollout = np.asarray(rollout)[:n]
  relevance = np.asarray(explain.pooled_relevance(
      rollout, _query_weights(run, inputs[:n], rollout.shape[-1])))
  if run.config.task == 'classification':
    probs = np.asarray(jax.nn.softmax(np.asarray(logits)[:n], axis=-1))
    titles = [_title(run, labels, probs, i) for i in range(n)]
  else:
    titles = [f'example {i}' for i in range(n)]
  record = {'workdir': run.workdir, 'step': run.step, 'method': 'attention',
            'layers': explain.attention_layer_names(
                run.task.model, run.params, inputs[:1]),
            'examples': []}
  written = []
  for i in range(n):
    tokens = _tokens(run, inputs[i]) if _is_text(run) else None
    real = len(tokens) if tokens else rollout.shape[-1]
    maps = [w[i, :, :real, :real] for w in weights]
    name = f'attention_example{i}.png'
    pictures.attention_heads(
        maps, tokens and [t.replace('\n', pictures.RETURN) for t in tokens],
        f'{titles[i]}, step {run.step}', os.path.join(out, name))
    written.append(name)
    record['examples'].append({
        'tokens': tokens, 'title': titles[i],
        'rollout_relevance': relevance[i, :real].tolist(),
        'weights': [m.tolist() for m in maps]})
  heading = f'attention rollout (step {run.step})'
  path = os.path.join(out, 'attention_rollout.png')
  if _is_text(run):
    rows = [(e['title'], e['tokens'], np.asarray(e['rollout_relevance']))
            for e in record['examples']]
    heading += ': how much the output reads from each token'
    pictures.token_colours(rows, path, False)
    pictures.token_page(rows, heading, os.path.join(out, 'attention.html'),
                        False)
    written += ['attention_rollout.png', 'attention.html']
  else:
    cls = int(run.config.model.get('pooling') == 'cls')  # Not a patch.
    pictures.image_rollout(
        inputs[:n], titles, relevance[:, cls:],
        heading + ': input; how much the output reads from each patch; both',
        path)
    written.append('attention_rollout.png')
  _write_json(record, os.path.join(out, 'attention.json'))
  return written + ['attention.json']


def _word_ids(run, word: str) -> np.ndarray:
  """A word's token ids, as it appears inside a sentence (after a space)
  when the vocabulary has it whole."""
  if run.tokenizer.kind == 'subword':
    spaced = run.tokenizer.encode(' ' + word)
    if len(spaced) == 1 or len(run.tokenizer.encode(word)) != 1:
      return spaced
  return _encode(run, word, f'--inputs word {word!r}')


def _frequent_tokens(run, n: int) -> list[int]:
  """The n most frequent eval tokens that are words of 3+ letters (for a
  character vocabulary: the n most frequent characters)."""
  counts = np.zeros(run.tokenizer.vocab_size, np.int64)
  for i in range(len(run.sources.eval)):
    np.add.at(counts, run.sources.eval[i][pipeline.TOKENS_KEY], 1)
  counts[[text_lib.PAD_ID, text_lib.EOS_ID]] = 0
  order = [int(t) for t in np.argsort(-counts, kind='stable') if counts[t]]
  words = [t for t in order
           if len(run.tokenizer.decode([t]).strip()) >= 3 and
           run.tokenizer.decode([t]).strip().isalpha()]
  return (words or [t for t in order
                    if run.tokenizer.decode([t]).strip()])[:n]


def _queries(run, path: str | None, n: int) -> list[tuple[str, list]]:
  """(label, [(sign, token ids)]) per query: a word, or a formula such as
  `king - man + woman`, per line of `path`; else the n most frequent
  eval words."""
  if path is None:
    return [(run.tokenizer.decode([t]).strip(), [(1.0, np.array([t]))])
            for t in _frequent_tokens(run, n)]
  if not os.path.isfile(path):
    raise ConfigError(f'--inputs {path} is not a file')
  queries = []
  for line in _read_lines(path):
    terms, sign = [], 1.0
    for part in line.replace('+', ' + ').split():
      if part in ('+', '-'):
        sign = 1.0 if part == '+' else -1.0
      else:
        terms.append((sign, _word_ids(run, part)))
        sign = 1.0
    queries.append((' '.join(line.split()), terms))
  return queries


def explain_neighbours(run, queries, k, out) -> list[str]:
  table = np.asarray(_embedding_table(run), np.float32)
  unit = np.asarray(explain.embeddings.unit_rows(table))
  vectors, exclude = [], np.zeros((len(queries), len(table)), bool)
  for q, (_, terms) in enumerate(queries):
    # A word of several pieces is the mean of their unit rows.
    vectors.append(sum(sign * unit[ids].mean(axis=0) for sign, ids in terms))
    for _, ids in terms:
      exclude[q, ids] = True
  exclude[:, [text_lib.PAD_ID, text_lib.EOS_ID]] = True
  k = min(k, len(table) - int(exclude.sum(axis=1).max()))
  ids, sims = jax.tree.map(np.asarray, explain.nearest_neighbours(
      table, np.stack(vectors), k, exclude))
  os.makedirs(out, exist_ok=True)
  record = {'workdir': run.workdir, 'step': run.step, 'method': 'neighbours',
            'queries': []}
  points, labels, groups = [], [], []
  for q, (label, _) in enumerate(queries):
    words = [run.tokenizer.decode([int(t)]) for t in ids[q]]
    record['queries'].append({'query': label, 'neighbours': [
        {'token': w, 'id': int(t), 'cosine': float(c)}
        for w, t, c in zip(words, ids[q], sims[q])]})
    points.append(vectors[q] / max(np.linalg.norm(vectors[q]), 1e-12))
    labels.append(label)
    groups.append(-(q + 1))
    for w, t in zip(words[:5], ids[q]):
      points.append(unit[t])
      labels.append(w.strip() or repr(w))
      groups.append(q + 1)
  pictures.projection(
      np.asarray(explain.pca_2d(np.stack(points))), labels, groups,
      f'token embeddings (step {run.step}), PCA of unit rows: each query (*) '
      'and its 5 nearest tokens by cosine',
      os.path.join(out, 'neighbours.png'))
  _write_json(record, os.path.join(out, 'neighbours.json'))
  return ['neighbours.png', 'neighbours.json']


def _embedding_table(run) -> jax.Array:
  """The model's token-embedding table [V, D] (the one `Embed` looks up)."""
  params = run.params
  for name in ('embed', 'embedding'):
    params = params.get(name, {}) if isinstance(params, dict) else {}
  if not hasattr(params, 'shape'):
    raise ConfigError(f'model {run.config.model.name!r} has no embed/'
                      'embedding table; --method=neighbours needs one')
  return params


def _write_json(record, path: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f)
  os.replace(tmp, path)


def explain_run(workdir: str, method: str, *, step: int | str | None = None,
                num_examples: int = 8, inputs: str | None = None,
                out: str | None = None, steps: int = 64,
                num_samples: int = 25, noise_level: float = 0.15,
                patch: int = 2, num_neighbours: int = 8,
                seed: int = 0) -> list[str]:
  """Writes the pictures and numbers of `method` for the run in `workdir`
  into `out` and returns their paths (arguments as the flags)."""
  if method not in METHODS:
    raise ConfigError(f'--method {method!r} is unknown; use one of '
                      f'{", ".join(METHODS)}')
  if min(num_examples, num_neighbours, num_samples) < 1 or steps < 2:
    raise ConfigError('--num_examples, --num_neighbours and --num_samples '
                      'must be >= 1 and --steps >= 2')
  settings = dict(steps=steps, num_samples=num_samples,
                  noise_level=noise_level, patch=patch, seed=seed)
  _check_method(workdir, method)
  run = load_run(workdir, step)
  out = os.path.abspath(os.path.expanduser(out or os.path.join(run.workdir,
                                                               'explain')))
  if method == 'neighbours':
    queries = _queries(run, inputs, num_examples)
    written = explain_neighbours(run, queries, num_neighbours, out)
  else:
    examples, labels = _inputs(run, inputs, num_examples)
    if method == 'attention':
      written = explain_attention(run, examples, labels, out)
    else:
      written = explain_attributions(run, method, examples, labels, out,
                                     settings)
  return [os.path.join(out, name) for name in written]


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    paths = explain_run(
        flags.FLAGS.workdir, flags.FLAGS.method, step=flags.FLAGS.step,
        num_examples=flags.FLAGS.num_examples, inputs=flags.FLAGS.inputs,
        out=flags.FLAGS.out, steps=flags.FLAGS.steps, num_samples=flags.FLAGS.num_samples,
        noise_level=flags.FLAGS.noise_level, patch=flags.FLAGS.patch,
        num_neighbours=flags.FLAGS.num_neighbours, seed=flags.FLAGS.seed)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  for path in paths:
    print(path)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
