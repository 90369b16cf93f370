"""Exports a trained model as one self-contained artifact (`jax.export`).

The model's forward pass (classifiers) or its generation loop (language
models, `generation.make_generate`) is traced once with a symbolic batch
(and sequence length, where the model takes any), lowered to StableHLO for
every platform asked (cpu, cuda and tpu by default) and serialized. The
parameters are the function's first argument, stored beside it in
params.npz (float32, or int8 with per-channel scales, `quantize.py`), not
baked in as constants. The manifest carries what inference needs besides:
the input signature and preprocessing, class names, generation limits and
defaults, the source run and step, and the versions that made it
(`artifact.check_versions` reads them back). `artifact.load` runs it
without flax or the model code.
"""

import json
import os
import shutil
import tempfile
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from bigml_jax.errors import ConfigError
from bigml_jax.serving import artifact
from bigml_jax.serving import generation
from bigml_jax.serving import quantize as quantize_lib

PLATFORMS = ('cpu', 'cuda', 'tpu')
QUANTIZATIONS = ('int8',)


def flat_params(params: Any) -> dict[str, np.ndarray]:
  """Params (boxed or not) -> {'block_0/mlp/hidden/kernel': array}."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(params))
  return {'/'.join(path): np.asarray(value) for path, value in flat.items()}


def nested_params(flat: dict[str, Any]) -> dict[str, Any]:
  """`flat_params`' inverse: {'a/b': x} -> {'a': {'b': x}}."""
  return flax.traverse_util.unflatten_dict(
      {tuple(name.split('/')): value for name, value in flat.items()})


def _cast_floats(tree: Any, dtype: Any) -> Any:
  # As the eval step casts params and batch to config.compute_dtype.
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
      else x, tree)


def _params_fn(compute_dtype: Any):
  """stored arrays -> the model's params, as the function runs."""
  def params_of(stored):
    params = nested_params(quantize_lib.dequantize(stored))
    return params if compute_dtype is None else _cast_floats(params,
                                                             compute_dtype)
  return params_of


def _specs(tree: dict[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in tree.items()}


def _export(fn, args, platforms) -> jax_export.Exported:
  return jax_export.export(jax.jit(fn), platforms=tuple(platforms))(*args)


def _classifier_function(model: nn.Module, stored: dict[str, np.ndarray],
                         input_spec: dict[str, Any], compute_dtype: Any,
                         platforms) -> jax_export.Exported:
  params_of = _params_fn(compute_dtype)

  def predict(stored, x):
    if compute_dtype is not None:
      x = _cast_floats(x, compute_dtype)
    logits = model.apply({'params': params_of(stored)}, x, train=False)
    return {'logits': logits,
            'probabilities': jax.nn.softmax(logits.astype(jnp.float32))}

  if input_spec['kind'] == 'image':
    batch, = jax_export.symbolic_shape('b')
    x = jax.ShapeDtypeStruct((batch, *input_spec['shape']), jnp.float32)
    return _export(predict, (_specs(stored), x), platforms)
  max_len = getattr(model, 'max_len', None)
  constraints = ('l >= 1',) + ((f'l <= {max_len}',) if max_len else ())
  batch, length = jax_export.symbolic_shape('b, l', constraints=constraints)
  try:  # Any sequence length, where the model allows one.
    return _export(predict, (_specs(stored), jax.ShapeDtypeStruct(
        (batch, length), jnp.int32)), platforms)
  except Exception:  # pylint: disable=broad-except
    # Shape polymorphism fails in many ways; a fixed length always fits.
    input_spec['any_length'] = False
    return _export(predict, (_specs(stored), jax.ShapeDtypeStruct(
        (batch, input_spec['max_length']), jnp.int32)), platforms)


def _generator_function(model: nn.Module, stored: dict[str, np.ndarray],
                        max_new_tokens: int, compute_dtype: Any, stop_id: int,
                        pad_id: int, platforms) -> jax_export.Exported:
  if 'decode' not in getattr(model, '__dataclass_fields__', {}):
    raise ConfigError(f'{type(model).__name__} has no key/value cache (a '
                      'decode field); generation is exported for models that '
                      'have one, e.g. gpt')
  params_of = _params_fn(compute_dtype)
  generate = generation.make_generate(model, max_new_tokens=max_new_tokens,
                                      stop_id=stop_id, pad_id=pad_id)

  def generate_from_stored(stored, *args):
    return generate(params_of(stored), *args)

  # Symbolic dims are >= 1, so callers pad `rest` to one column at least:
  # the slack lets a prompt of the longest length through with it. The
  # last column of the buffer is never fed to the model, only drawn.
  batch, prefill, rest = jax_export.symbolic_shape(
      'b, q, r', constraints=(
          f'q + r <= {model.max_len - max_new_tokens + 1}',))
  row = lambda dtype: jax.ShapeDtypeStruct((batch,), dtype)
  args = (_specs(stored), jax.ShapeDtypeStruct((batch, prefill), jnp.int32),
          jax.ShapeDtypeStruct((batch, rest), jnp.int32), row(jnp.int32),
          row(jnp.int32), row(jnp.uint32), row(jnp.float32), row(jnp.int32),
          row(jnp.float32))
  return _export(generate_from_stored, args, platforms)


def _signature(exported: jax_export.Exported, num_params: int,
               names: list[str]) -> dict[str, Any]:
  """The function's inputs after the params, and its outputs, as text."""
  in_avals = exported.in_avals[num_params:]
  return {'inputs': {n: str(a) for n, a in zip(names, in_avals)},
          'outputs': [str(a) for a in exported.out_avals]}


_GENERATE_INPUTS = ['prefix', 'rest', 'rest_len', 'num_new', 'seed',
                    'temperature', 'top_k', 'top_p']


def export_model(out_dir: str, model: nn.Module, params: Any, *, kind: str,
                 input_spec: dict[str, Any] | None = None,
                 class_names: list[str] | None = None, tokenizer: Any = None,
                 max_new_tokens: int | None = None,
                 sampling: dict[str, Any] | None = None,
                 compute_dtype: str | None = None,
                 source: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None,
                 quantize: str | None = None,
                 platforms: tuple[str, ...] = PLATFORMS) -> dict[str, Any]:
  """Writes the artifact for `model` with `params` to `out_dir` (new).

  Args:
    out_dir: a directory that does not exist yet (or is empty); written in a
      temporary sibling and renamed, so it is whole or absent.
    model: the Flax module, as trained.
    params: its params (boxed or not).
    kind: 'classifier' (model(inputs [B, ...]) -> logits [B, classes]) or
      'generator' (a causal LM with a key/value cache, e.g. `GPTLM`).
    input_spec: classifiers: {'kind': 'image', 'shape': [H, W, C], 'dtype':
      the dataset's pixel dtype} or {'kind': 'text', 'max_length': L}.
    class_names: one name per logit (classifiers).
    tokenizer: a `bigml_jax.data.text` tokenizer (text models).
    max_new_tokens: generators: the most tokens one call adds (default:
      half the model's max_len).
    sampling: generators: default temperature, top_k and top_p.
    compute_dtype: e.g. 'bfloat16' if the run computed in it.
    source: {'workdir', 'step'} of the run, for the manifest.
    run_config: the run's config, saved beside as config.json.
    quantize: None or 'int8' (`quantize.quantize_int8`).
    platforms: what to lower for; any of 'cpu', 'cuda', 'tpu', 'rocm'.

  Returns:
    The manifest written.
  """
  if quantize not in (None,) + QUANTIZATIONS:
    raise ConfigError(f'quantize {quantize!r} is unknown; use int8 or none')
  if kind not in ('classifier', 'generator'):
    raise ConfigError(f"kind {kind!r} is unknown; use 'classifier' or "
                      "'generator'")
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or
                                  os.listdir(out_dir)):
    raise ConfigError(f'{out_dir} already exists and is not empty; pass a '
                      'new --out (nothing there was changed)')
  if (kind == 'generator' or (input_spec or {}).get('kind') == 'text') and (
      tokenizer is None):
    raise ConfigError('a text model is exported with its tokenizer; pass '
                      'tokenizer=')
  flat = flat_params(params)
  stored = quantize_lib.quantize_int8(flat) if quantize else flat
  dtype = None if compute_dtype in (None, '', 'float32') else jnp.dtype(
      compute_dtype)
  manifest = {
      'format': artifact.FORMAT, 'format_version': artifact.FORMAT_VERSION,
      'kind': kind, 'model': type(model).__name__,
      'source': dict(source or {}), 'compute_dtype': compute_dtype or
      'float32', 'platforms': list(platforms),
      'params': {'file': artifact.PARAMS, 'quantization': quantize,
                 'count': int(sum(v.size for v in flat.values())),
                 'float32_bytes': int(sum(v.size * 4 for v in flat.values())),
                 'stored_bytes': int(sum(v.nbytes for v in stored.values()))}}
  if kind == 'classifier':
    input_spec = dict(input_spec)
    if input_spec['kind'] == 'text':
      input_spec['any_length'] = True
    # What `inputs.py` does, in words, for readers of the manifest.
    input_spec['preprocessing'] = (
        f'tokenizer.json ids, truncated to {input_spec.get("max_length")} and '
        'padded with 0' if input_spec['kind'] == 'text' else
        f'{input_spec["dtype"]} [H, W, C] as stored; integer pixels / 255 -> '
        'float32')
    exported = _classifier_function(model, stored, input_spec, dtype,
                                    platforms)
    num_classes = exported.out_avals[0].shape[-1]
    class_names = list(class_names or [str(i) for i in range(num_classes)])
    if len(class_names) != num_classes:
      raise ConfigError(f'{len(class_names)} class names for a model with '
                        f'{num_classes} outputs; pass one name per class')
    manifest.update(input=input_spec, classes=class_names,
                    functions={'predict': _signature(
                        exported, len(stored), [input_spec['kind']])})
    name = 'predict'
  else:
    max_new_tokens = max_new_tokens or model.max_len // 2
    if not 1 <= max_new_tokens < model.max_len - 1:
      raise ConfigError(f'max_new_tokens must be 1 to {model.max_len - 2} '
                        f"(the model's max_len is {model.max_len}, a prompt "
                        f'starts with EOS), got {max_new_tokens}')
    exported = _generator_function(
        model, stored, max_new_tokens, dtype, artifact.inputs_lib.EOS_ID,
        artifact.inputs_lib.PAD_ID, platforms)
    sampling = dict(sampling or {})
    manifest.update(
        input={'kind': 'text', 'preprocessing': 'EOS, then tokenizer.json '
               'ids'},
        generation={
            'max_new_tokens': max_new_tokens, 'max_len': model.max_len,
            'max_prompt_tokens': model.max_len - max_new_tokens - 1,
            'eos_id': artifact.inputs_lib.EOS_ID,
            'defaults': {'max_new_tokens': max_new_tokens,
                         'temperature': float(sampling.get('temperature', 1.0)),
                         'top_k': int(sampling.get('top_k', 0)),
                         'top_p': float(sampling.get('top_p', 1.0)),
                         'seed': 0}},
        functions={'generate': _signature(exported, len(stored),
                                          _GENERATE_INPUTS)})
    name = 'generate'
  manifest['versions'] = dict(
      artifact.runtime_versions(),
      calling_convention=exported.calling_convention_version)
  manifest['versions'].pop('calling_conventions')
  _write(out_dir, manifest, {artifact.FUNCTION_FILES[name]:
                             bytes(exported.serialize())}, stored, tokenizer,
         run_config)
  return manifest


def _write(out_dir, manifest, blobs, stored, tokenizer, run_config) -> None:
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.', dir=parent)
  try:
    for file, blob in blobs.items():
      with open(os.path.join(tmp, file), 'wb') as f:
        f.write(blob)
    np.savez(os.path.join(tmp, artifact.PARAMS), **stored)
    if tokenizer is not None:
      tokenizer.save(os.path.join(tmp, artifact.TOKENIZER))
    if run_config is not None:
      with open(os.path.join(tmp, 'config.json'), 'w') as f:
        json.dump(run_config, f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, artifact.MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=2)
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # Empty: checked above.
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export_run(run: Any, out_dir: str, *, class_names: list[str] | None = None,
               quantize: str | None = None, max_new_tokens: int | None = None,
               platforms: tuple[str, ...] = PLATFORMS) -> dict[str, Any]:
  """Exports a loaded run: `export_model` with what the run knows.

  `run` has what `training.run.load_run` gives: config, task (its model and
  input_key), params, step, tokenizer, sources (the raw train split, whose
  first example gives an image's shape and dtype) and workdir.
  """
  config = run.config
  task_name = config.get('task', 'classification')
  common = dict(tokenizer=run.tokenizer, quantize=quantize,
                compute_dtype=config.get('compute_dtype') or None,
                source={'workdir': run.workdir, 'step': int(run.step),
                        'dataset': config.dataset.name},
                run_config=json.loads(config.to_json_best_effort()),
                platforms=platforms)
  if task_name == 'lm':
    return export_model(out_dir, run.task.model, run.params, kind='generator',
                        max_new_tokens=max_new_tokens,
                        sampling=dict(config.get('sampling') or {}), **common)
  if task_name != 'classification':
    raise ConfigError(f'{run.workdir} is a {task_name} run; export serves '
                      'classifiers and language models (task classification '
                      'or lm)')
  if run.tokenizer is not None:
    from bigml_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    input_spec = {'kind': 'text', 'max_length': config.dataset.get(
        'max_length', pipeline.DEFAULT_MAX_LENGTH)}
  else:
    raw = np.asarray(run.sources.train[0][config.dataset.get('image_key',
                                                             'image')])
    if raw.ndim != 3:
      raise ConfigError(f'{run.workdir} trains on inputs of shape '
                        f'{list(raw.shape)}; export takes images [H, W, C] '
                        'or text')
    input_spec = {'kind': 'image', 'shape': list(raw.shape),
                  'dtype': raw.dtype.name}
  return export_model(out_dir, run.task.model, run.params, kind='classifier',
                      input_spec=input_spec, class_names=class_names,
                      **common)

