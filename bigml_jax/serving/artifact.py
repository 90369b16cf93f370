"""Loading an exported model: `load(EXPORT_DIR)` -> a callable on raw inputs.

An artifact (see `export.py`) is a directory:

  manifest.json    kind, input signature and preprocessing, class names,
                   generation limits, source run and step, versions
  predict.jax      classifiers: serialized `jax.export` StableHLO,
                   (params, inputs [B, ...]) -> logits and probabilities
  generate.jax     language models: prefill + cached decode steps
                   (`generation.make_generate`)
  params.npz       the parameters, passed to the function as arguments
  tokenizer.json   text models

Loading needs jax, numpy and, for text, the tokenizer; neither flax nor the
model code (`bigml_jax.models`) is imported. An artifact that this jax
cannot run (a newer serialization or calling convention, or another
artifact format) is refused with one line saying which versions it needs.
"""

import dataclasses
import importlib.metadata
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
from jax import export as jax_export
import numpy as np

from bigml_jax.errors import ConfigError
from bigml_jax.serving import inputs as inputs_lib
from bigml_jax.serving.inputs import InputError

FORMAT = 'bigml_jax.serving'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
PARAMS = 'params.npz'
TOKENIZER = 'tokenizer.json'
FUNCTION_FILES = {'predict': 'predict.jax', 'generate': 'generate.jax'}
# jax.default_backend() -> the name jax.export lowers for.
_EXPORT_PLATFORM = {'gpu': 'cuda'}


class ArtifactError(ConfigError):
  """An export directory that cannot be loaded here; the message says why."""


def serialization_version() -> int | None:
  """The newest `jax.export` serialization version this jax reads (None if
  jax no longer says)."""
  try:
    from jax._src.export import serialization  # pylint: disable=g-import-not-at-top
  except ImportError:  # flatbuffers missing: pip install 'bigml_jax[serve]'.
    return None
  return getattr(serialization, '_SERIALIZATION_VERSION', None)


def package_version() -> str:
  try:
    return importlib.metadata.version('bigml_jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def runtime_versions() -> dict[str, Any]:
  """What this process runs: library, jax, and the export versions jax reads."""
  return {
      'bigml_jax': package_version(), 'jax': jax.__version__,
      'serialization': serialization_version(),
      'calling_conventions': [
          jax_export.minimum_supported_calling_convention_version,
          jax_export.maximum_supported_calling_convention_version]}


def check_versions(manifest: dict[str, Any], where: str) -> None:
  """Raises ArtifactError, in one line, if this process cannot run it."""
  if manifest.get('format') != FORMAT:
    raise ArtifactError(f'{where} is not a bigml_jax export (its manifest '
                        f'has format {manifest.get("format")!r}); export a '
                        'run with python -m experiments.export')
  if manifest.get('format_version') != FORMAT_VERSION:
    raise ArtifactError(
        f'{where} is artifact format {manifest.get("format_version")}, '
        f'which needs bigml_jax {manifest["versions"]["bigml_jax"]}; this '
        f'bigml_jax {package_version()} reads format {FORMAT_VERSION}')
  made = manifest['versions']
  here = runtime_versions()
  low, high = here['calling_conventions']
  newer = (here['serialization'] is not None and
           made['serialization'] > here['serialization'])
  if newer or not low <= made['calling_convention'] <= high:
    fix = (f'install jax>={made["jax"]}' if newer or
           made['calling_convention'] > high else
           'export the run again with this jax')
    raise ArtifactError(
        f'{where} needs jax {made["jax"]} or a jax that reads serialization '
        f'version {made["serialization"]} and calling convention '
        f'{made["calling_convention"]}; this jax {here["jax"]} reads '
        f'serialization versions up to {here["serialization"]} and calling '
        f'conventions {low}-{high}: {fix}')


def _read_manifest(export_dir: str) -> dict[str, Any]:
  path = os.path.join(export_dir, MANIFEST)
  if not os.path.isfile(path):
    raise ArtifactError(f'{export_dir} holds no {MANIFEST}; pass a '
                        'directory written by python -m experiments.export')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ArtifactError(f'{path} cannot be read ({e}); export the run '
                        'again') from None


def _deserialize(export_dir: str, name: str) -> jax_export.Exported:
  path = os.path.join(export_dir, FUNCTION_FILES[name])
  try:
    with open(path, 'rb') as f:
      return jax_export.deserialize(bytearray(f.read()))
  except ImportError as e:  # flatbuffers.
    raise ArtifactError(f'{e}: pip install flatbuffers (or '
                        "'bigml_jax[serve]')") from None
  except Exception as e:  # pylint: disable=broad-except
    # A truncated or foreign file fails inside flatbuffers in many ways.
    raise ArtifactError(f'{path} cannot be read ({type(e).__name__}); '
                        'export the run again') from None


def read_params(export_dir: str) -> dict[str, np.ndarray]:
  """The stored arrays {name: array} (int8 and scales when quantized)."""
  path = os.path.join(export_dir, PARAMS)
  try:
    with np.load(path, allow_pickle=False) as stored:
      return {name: stored[name] for name in stored.files}
  except (OSError, ValueError) as e:
    raise ArtifactError(f'{path} cannot be read ({e}); export the run '
                        'again') from None


@dataclasses.dataclass
class _Function:
  """An exported function with its params on device, compiled once per
  input shape (ahead of time: a shape seen before never compiles again)."""
  exported: jax_export.Exported
  params: dict[str, jax.Array]

  def __post_init__(self):
    self._compiled: dict[tuple, Any] = {}
    self._jitted = jax.jit(self.exported.call)

  def compile(self, *args: np.ndarray) -> Any:
    """The executable for these inputs' shapes and dtypes (numpy arrays)."""
    key = tuple((a.shape, a.dtype.name) for a in args)
    if key not in self._compiled:
      specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
      self._compiled[key] = self._jitted.lower(self.params, *specs).compile()
    return self._compiled[key]

  def __call__(self, *args):
    args = [np.asarray(a) for a in args]
    return self.compile(*args)(self.params, *args)

  @property
  def compiled_shapes(self) -> list[list[list[int]]]:
    return [[list(shape) for shape, _ in key] for key in self._compiled]


class Model:
  """What both kinds share: the manifest, versions, tokenizer, functions."""

  kind = ''

  def __init__(self, export_dir: str, manifest: dict[str, Any],
               function: _Function, tokenizer: Any = None):
    self.export_dir = export_dir
    self.manifest = manifest
    self.function = function
    self.tokenizer = tokenizer

  @property
  def info(self) -> dict[str, Any]:
    """The manifest, for /v1/model and logs."""
    return dict(self.manifest, compiled=self.function.compiled_shapes)


class Classifier(Model):
  """`classifier(inputs)` -> one {'label', 'index', 'probabilities'} per
  input: images (arrays, nested lists or PIL images) or texts, as the run's
  data held them (`inputs_lib`); `InputError` names a bad one."""

  kind = 'classifier'

  @property
  def classes(self) -> list[str]:
    return self.manifest['classes']

  def preprocess_one(self, value: Any) -> np.ndarray:
    """One raw input -> what the dataset stored (image) or token ids."""
    spec = self.manifest['input']
    if spec['kind'] == 'image':
      return inputs_lib.image_array(value, spec['shape'], spec['dtype'])
    return self.tokenizer.encode(inputs_lib.check_text(value))

  def batch(self, examples: Sequence[np.ndarray]) -> np.ndarray:
    """Preprocessed examples -> the model's input batch."""
    spec = self.manifest['input']
    if spec['kind'] == 'image':
      return inputs_lib.preprocess_images(examples)
    return inputs_lib.padded_tokens(examples, spec['max_length'])

  def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Model inputs [B, ...] -> {'logits', 'probabilities'} [B, classes]."""
    return jax.tree.map(np.asarray, self.function(batch))

  def predictions(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
    return [{'label': self.classes[int(p.argmax())], 'index': int(p.argmax()),
             'probabilities': [float(x) for x in p]} for p in probabilities]

  def __call__(self, values: Sequence[Any]) -> list[dict[str, Any]]:
    if not len(values):
      return []
    examples = [self.preprocess_one(v) for v in values]
    return self.predictions(self.logits(self.batch(examples))['probabilities'])


class Generator(Model):
  """`generator(prompts, max_new_tokens=..., temperature=..., ...)` -> the
  continuation of each prompt (str). Prompts start after EOS, as the run's
  documents did; a continuation ends at EOS or after max_new_tokens."""

  kind = 'generator'

  @property
  def limits(self) -> dict[str, Any]:
    return self.manifest['generation']

  def encode_prompt(self, prompt: Any) -> np.ndarray:
    """EOS + the prompt's ids; InputError if it cannot be one."""
    if not isinstance(prompt, str):
      raise InputError(f'a prompt must be a string, not '
                       f'{type(prompt).__name__}')
    ids = np.concatenate([[inputs_lib.EOS_ID], self.tokenizer.encode(prompt)
                          ]).astype(np.int32)
    if self.tokenizer.decode(ids) != prompt:
      unseen = sorted(set(prompt) - set(self.tokenizer.decode(ids)))
      raise InputError(f'the prompt has characters the model never saw in '
                       f'training ({"".join(unseen)!r}); leave them out')
    room = self.limits['max_prompt_tokens']
    if len(ids) - 1 > room:
      raise InputError(f'the prompt is {len(ids) - 1} tokens; this model '
                       f'takes at most {room}')
    return ids

  def options(self, max_new_tokens=None, temperature=None, top_k=None,
              top_p=None, seed=None) -> dict[str, Any]:
    """One request's options, defaults filled in and checked."""
    limits = self.limits
    opts = dict(limits['defaults'])
    given = {'max_new_tokens': max_new_tokens, 'temperature': temperature,
             'top_k': top_k, 'top_p': top_p, 'seed': seed}
    opts.update({k: v for k, v in given.items() if v is not None})
    for key in ('max_new_tokens', 'top_k', 'seed'):
      if isinstance(opts[key], bool) or not isinstance(opts[key], int):
        raise InputError(f'{key} must be an integer, not {opts[key]!r}')
    for key in ('temperature', 'top_p'):
      if isinstance(opts[key], bool) or not isinstance(opts[key],
                                                       (int, float)):
        raise InputError(f'{key} must be a number, not {opts[key]!r}')
    if not 1 <= opts['max_new_tokens'] <= limits['max_new_tokens']:
      raise InputError(f'max_new_tokens must be 1 to '
                       f'{limits["max_new_tokens"]}, got '
                       f'{opts["max_new_tokens"]}')
    if opts['temperature'] < 0 or opts['top_k'] < 0 or not (
        0 < opts['top_p'] <= 1):
      raise InputError('temperature and top_k must be >= 0 and top_p in '
                       f'(0, 1], got {opts["temperature"]}, {opts["top_k"]}, '
                       f'{opts["top_p"]}')
    if not 0 <= opts['seed'] < 2**32:
      raise InputError(f'seed must be in [0, 2**32), got {opts["seed"]}')
    return opts

  def generate_ids(self, prompts: Sequence[np.ndarray],
                   options: Sequence[dict[str, Any]], *,
                   prefill: int | None = None,
                   rest: int | None = None) -> np.ndarray:
    """Encoded prompts + their options -> new ids int32 [B, N] (PAD after
    the end). The first `prefill` tokens (default: the shortest prompt's
    length) go in at once, the rest through the decode steps; `rest` pads
    the remainder to a fixed width, so a server's shapes stay fixed."""
    lengths = [len(p) for p in prompts]
    prefill = min(lengths) if prefill is None else prefill
    # At least one column: the exported shapes are symbolic, hence >= 1.
    rest = max(max(lengths) - prefill, 1) if rest is None else rest
    batch = len(prompts)
    prefix = np.stack([p[:prefill] for p in prompts]).astype(np.int32)
    rest_ids = inputs_lib.padded_tokens([p[prefill:] for p in prompts], rest)
    column = lambda key, dtype: np.array([o[key] for o in options], dtype)
    return np.asarray(self.function(
        prefix.reshape(batch, prefill), rest_ids,
        np.array(lengths, np.int32) - prefill,
        column('max_new_tokens', np.int32), column('seed', np.uint32),
        column('temperature', np.float32), column('top_k', np.int32),
        column('top_p', np.float32)))

  def completion(self, prompt: str, ids: np.ndarray, new: np.ndarray) -> str:
    """The text the new ids add to `prompt` (decoded together, so subwords
    that join across the boundary read right)."""
    new = new[:np.argmax(new == inputs_lib.PAD_ID)] if (
        new == inputs_lib.PAD_ID).any() else new
    text = self.tokenizer.decode(np.concatenate([ids, new]))
    return (text[len(prompt):] if text.startswith(prompt) else
            self.tokenizer.decode(new))

  def __call__(self, prompts: Sequence[str], **options) -> list[str]:
    if isinstance(prompts, str):
      raise InputError('pass a list of prompts, e.g. [prompt]')
    if not len(prompts):
      return []
    ids = [self.encode_prompt(p) for p in prompts]
    opts = self.options(**options)
    new = self.generate_ids(ids, [opts] * len(ids))
    return [self.completion(p, i, n) for p, i, n in zip(prompts, ids, new)]


def _backend_platform() -> str:
  backend = jax.default_backend()
  return _EXPORT_PLATFORM.get(backend, backend)


def load(export_dir: str) -> Classifier | Generator:
  """Reads an artifact written by `export.export_model` (or the export CLI).

  Returns a `Classifier` or `Generator`: a callable on raw inputs (image
  arrays, texts), with its params on the default device.

  Raises:
    ArtifactError: not an artifact, damaged, or made for versions or
      platforms this process cannot run (one line naming what it needs).
  """
  export_dir = os.path.abspath(os.path.expanduser(export_dir))
  manifest = _read_manifest(export_dir)
  check_versions(manifest, export_dir)
  platform = _backend_platform()
  if platform not in manifest['platforms']:
    raise ArtifactError(
        f'{export_dir} was exported for {", ".join(manifest["platforms"])}, '
        f'not {platform}; export it again with --platforms={platform}')
  name = 'generate' if manifest['kind'] == 'generator' else 'predict'
  exported = _deserialize(export_dir, name)
  params = jax.device_put(read_params(export_dir))
  tokenizer = None
  if os.path.isfile(os.path.join(export_dir, TOKENIZER)):
    from bigml_jax.data import text as text_lib  # pylint: disable=g-import-not-at-top
    tokenizer = text_lib.load_tokenizer(os.path.join(export_dir, TOKENIZER))
  cls = Generator if manifest['kind'] == 'generator' else Classifier
  return cls(export_dir, manifest, _Function(exported, params), tokenizer)


__all__ = ['ArtifactError', 'Classifier', 'Generator', 'InputError', 'load']
