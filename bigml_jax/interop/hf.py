"""Hugging Face checkpoints in and out: safetensors <-> params, config.json
<-> model config, tokenizer.json <-> the run's tokenizer.

A local model directory, as `save_pretrained` writes it (`config.json`,
`model.safetensors` or the shards its `model.safetensors.index.json` names,
`tokenizer.json`), loads into the zoo:

  BERT   (BertModel, BertForMaskedLM, BertForSequenceClassification,
          BertForPreTraining)   -> `BertClassifier` ('bert') / `BertMLM`
  GPT-2  (GPT2LMHeadModel, GPT2Model)   -> `GPTLM` ('gpt')

with the transformer options that make them the same function (post-LN,
token types, embedding LayerNorm, pooler, exact GELU, epsilon): logits equal
transformers' to float32 rounding. Weights are read from safetensors only: a
`pytorch_model.bin` is a pickle, and unpickling runs whatever code it holds.

Each parameter is read into its shards: `jax.make_array_from_callback` asks
for every device's block of it, which is sliced out of the file lazily
(safetensors' `get_slice`) and then transposed or split into heads, so a
model larger than one device loads and no host reads a sharded tensor
whole. `save_pretrained` writes a model back in the layout
`transformers.AutoModel*.from_pretrained` reads: HF -> bigml_jax -> HF gives
the same tensors, bit for bit.

Name map (ours <- HF; BERT's under 'bert.' in its task models, GPT-2's under
'transformer.'): embed/embedding <- embeddings.word_embeddings | wte;
positions/pos_embedding <- position_embeddings | wpe; token_types <-
token_type_embeddings; embed_norm <- embeddings.LayerNorm; encoder/block_i
<- encoder.layer.i (attention.self.query/key/value, attention.output.dense,
attention.output.LayerNorm = ln_attention, intermediate.dense = mlp/hidden,
output.dense = mlp/out, output.LayerNorm = ln_mlp) | decoder/block_i <- h.i
(ln_1, attn.c_attn split in three, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj),
decoder/final_norm <- ln_f; pooler <- pooler.dense; head <- classifier;
mlm_transform, mlm_norm, mlm_bias <- cls.predictions.transform.dense,
.transform.LayerNorm, .bias. Torch's Linear stores [out, in], our kernels
[in, out]; GPT-2's Conv1D stores [in, out].
"""

import copy
import dataclasses
import json
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.data import text as text_lib
from bigml_jax.errors import ConfigError, listing
from bigml_jax.models import build_model
from bigml_jax.parallel import mesh as mesh_lib

PREFIX = 'hf:'
WEIGHTS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
ARCHITECTURES = {
    'bert': ('BertModel', 'BertForMaskedLM', 'BertForSequenceClassification',
             'BertForPreTraining'),
    'gpt2': ('GPT2LMHeadModel', 'GPT2Model'),
}
# Our model names each HF family loads into, the first the default.
MODEL_NAMES = {'bert': ('bert', 'bert_mlm'), 'gpt2': ('gpt',)}
_GELUS = {'gelu': 'exact', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh',
          'gelu_fast': 'tanh'}
# Fields of our model config that a run may set on a pretrained model; the
# others are its architecture, which config.json decides.
TUNABLE = ('name', 'dropout_rate', 'attention_impl', 'remat', 'dtype',
           'pooling', 'num_classes', 'decode')


def _safetensors():
  try:
    import safetensors  # pylint: disable=g-import-not-at-top
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("Hugging Face weights need the safetensors package: pip "
                      "install 'bigml_jax[hf]'") from None
  return safetensors


def source_dir(init_from: str | None) -> str | None:
  """The directory of an `init_from` of the form 'hf:DIR' (absolute), else
  None."""
  if not init_from or not str(init_from).startswith(PREFIX):
    return None
  directory = str(init_from)[len(PREFIX):]
  if '://' in directory:
    raise ConfigError(f'init_from {init_from}: URLs are not read (nothing is '
                      'downloaded here); download the model and pass '
                      'hf:/path/to/its/directory')
  return os.path.abspath(os.path.expanduser(directory))


def _dir(source: str) -> str:
  """`source` ('hf:DIR' or DIR) as a checked absolute directory."""
  directory = source_dir(source) or os.path.abspath(
      os.path.expanduser(str(source)))
  if not os.path.isfile(os.path.join(directory, 'config.json')):
    what = 'is not a directory' if not os.path.isdir(directory) else (
        'holds no config.json')
    raise ConfigError(f'Hugging Face model {directory} {what}; pass the '
                      'directory save_pretrained wrote (config.json, '
                      'model.safetensors, tokenizer.json)')
  return directory


def read_config(source: str) -> dict[str, Any]:
  """config.json of the model directory `source` ('hf:DIR' or DIR), checked
  to be an architecture this module reads."""
  directory = _dir(source)
  with open(os.path.join(directory, 'config.json')) as f:
    config = json.load(f)
  model_type = config.get('model_type')
  arch = (config.get('architectures') or [model_type or 'unknown'])[0]
  if model_type not in ARCHITECTURES or (
      config.get('architectures') and arch not in ARCHITECTURES[model_type]):
    known = '; '.join(f'{t}: {", ".join(a)}' for t, a in ARCHITECTURES.items())
    raise ConfigError(f'{directory} holds a {arch} (model_type '
                      f'{model_type!r}), which bigml_jax does not read; it '
                      f'reads {known}')
  act = config.get('hidden_act' if model_type == 'bert' else
                   'activation_function', 'gelu')
  unsupported = [f'{k}={config.get(k)!r}' for k, ok in (
      ('position_embedding_type', lambda v: v in (None, 'absolute')),
      ('is_decoder', lambda v: not v), ('add_cross_attention', lambda v: not v),
      ('scale_attn_weights', lambda v: v in (None, True)),
      ('scale_attn_by_inverse_layer_idx', lambda v: not v),
      ('tie_word_embeddings', lambda v: v in (None, True)),
  ) if not ok(config.get(k))]
  if act not in _GELUS:
    unsupported.append(f'activation {act!r}')
  if unsupported:
    raise ConfigError(f'{directory}/config.json sets {", ".join(unsupported)}, '
                      f'which the zoo\'s {arch} does not have')
  return config


def _weight_files(directory: str) -> list[str]:
  """The safetensors files of `directory`; refuses pickles and missing
  shards."""
  single = os.path.join(directory, WEIGHTS_FILE)
  index = os.path.join(directory, INDEX_FILE)
  if os.path.isfile(single):
    return [single]
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f).get('weight_map', {}).values()))
    missing = [s for s in shards
               if not os.path.isfile(os.path.join(directory, s))]
    if missing or not shards:
      raise ConfigError(
          f'{index} names shards that are not in {directory}: '
          f'{", ".join(missing) or "none at all"}; download every shard '
          'beside the index')
    return [os.path.join(directory, s) for s in shards]
  pickles = sorted(f for f in os.listdir(directory)
                   if f.endswith(('.bin', '.pt', '.pth', '.ckpt')))
  if pickles:
    raise ConfigError(
        f'{directory} holds {", ".join(pickles)} but no {WEIGHTS_FILE}: a '
        f'{os.path.splitext(pickles[0])[1]} is a Python pickle, and '
        'unpickling one runs any code it holds, so it is never read here; '
        'get the model.safetensors published beside it, or convert it where '
        'you trust it (transformers: model.save_pretrained(DIR) writes '
        'safetensors)')
  raise ConfigError(f'{directory} holds no {WEIGHTS_FILE} (nor {INDEX_FILE}); '
                    'pass the directory save_pretrained wrote')


# -- Model config -------------------------------------------------------------


def _special_ids(directory: str) -> dict[str, int | None]:
  path = os.path.join(directory, 'tokenizer.json')
  if not os.path.isfile(path):
    return {}
  tokenizer = text_lib.HFTokenizer.from_file(path)
  return {f'{r}_id': getattr(tokenizer, f'{r}_id')
          for r in text_lib.SPECIAL_ROLES}


def model_config(source: str, name: str | None = None) -> dict[str, Any]:
  """Our model config (`build_model`'s fields) of the HF model in `source`.

  `name` picks the module ('bert' classifier, 'bert_mlm', 'gpt'; default:
  the one config.json's architecture is). Special ids come from the
  directory's tokenizer.json when it has one, else from config.json. A
  classifier's num_classes is config.json's number of labels.
  """
  directory = _dir(source)
  hf = read_config(directory)
  model_type = hf['model_type']
  arch = (hf.get('architectures') or [''])[0]
  if name is None:
    name = ('bert_mlm' if arch in ('BertForMaskedLM', 'BertForPreTraining')
            else MODEL_NAMES[model_type][0])
  if name not in MODEL_NAMES[model_type]:
    names = ' or '.join(MODEL_NAMES[model_type])
    raise ConfigError(f'{directory} holds a {model_type} model, which loads '
                      f'into model.name {names}, not {name!r}')
  ids = _special_ids(directory)
  act = _GELUS[hf.get('hidden_act', hf.get('activation_function', 'gelu'))]
  if model_type == 'gpt2':
    eos = ids.get('eos_id', hf.get('eos_token_id'))
    return {
        'name': name, 'vocab_size': hf['vocab_size'],
        'num_layers': hf['n_layer'], 'd_model': hf['n_embd'],
        'num_heads': hf['n_head'],
        'mlp_dim': hf.get('n_inner') or 4 * hf['n_embd'],
        'max_len': hf['n_positions'], 'position_embedding': 'learned',
        'dropout_rate': hf.get('resid_pdrop', 0.1), 'gelu': act,
        'layer_norm_epsilon': hf.get('layer_norm_epsilon', 1e-5),
        'pad_id': ids.get('pad_id', hf.get('pad_token_id')),
        'eos_id': eos if eos is not None else hf['vocab_size'] - 1}
  config = {
      'name': name, 'vocab_size': hf['vocab_size'],
      'num_layers': hf['num_hidden_layers'], 'd_model': hf['hidden_size'],
      'num_heads': hf['num_attention_heads'],
      'mlp_dim': hf['intermediate_size'],
      'max_len': hf['max_position_embeddings'],
      'position_embedding': 'learned', 'norm': 'post',
      'type_vocab_size': hf.get('type_vocab_size', 2), 'embed_norm': True,
      'dropout_rate': hf.get('hidden_dropout_prob', 0.1), 'gelu': act,
      'layer_norm_epsilon': hf.get('layer_norm_eps', 1e-12),
      'pad_id': ids.get('pad_id', hf.get('pad_token_id')) or 0}
  if name == 'bert_mlm':
    config['mask_id'] = ids.get('mask_id')
    if config['mask_id'] is None:
      raise ConfigError(f'{directory} has no tokenizer.json with a [MASK] '
                        'token, which a masked LM reads; add the model\'s '
                        'tokenizer (tokenizer.save_pretrained(DIR))')
  else:
    config.update(pooling='cls', pooler=True)
    if arch == 'BertForSequenceClassification':
      config['num_classes'] = len(hf.get('id2label') or {}) or hf.get(
          'num_labels', 2)
  return config


def resolve_init_from(config):
  """For a run with `config.init_from='hf:DIR'`: (a copy of `config` whose
  model section is DIR's architecture, `model_config`, DIR). Fields the run
  may set (`TUNABLE`: dropout, remat, dtype, ...) keep the config's values;
  num_classes is left to the data unless set. Other configs come back as
  they are, with None.

  Raises ConfigError if config.model sets an architecture field (d_model,
  vocab_size, ...) to other than config.json's.
  """
  directory = source_dir(config.get('init_from'))
  if directory is None:
    return config, None
  given = dict(config.model.items())
  resolved = model_config(directory, given.get('name'))
  resolved.pop('num_classes', None)
  clashes = [f'model.{k}={given[k]!r} (config.json: {resolved[k]!r})'
             for k in resolved if k in given and k not in TUNABLE and
             given[k] != resolved[k]]
  if clashes:
    raise ConfigError(f'init_from hf:{directory} fixes the architecture, but '
                      f'the config sets {", ".join(clashes)}; remove those '
                      'fields from config.model')
  # Fields the model does not have are left for build_model to name.
  resolved.update({k: v for k, v in given.items()
                   if k in TUNABLE or k not in resolved})
  max_length = (config.get('dataset') or {}).get('max_length')
  if max_length and max_length > resolved['max_len']:
    raise ConfigError(f'dataset.max_length {max_length} exceeds the '
                      f'{resolved["max_len"]} positions of init_from '
                      f'hf:{directory}; set dataset.max_length to at most '
                      f'{resolved["max_len"]}')
  config = copy.deepcopy(config)
  with config.unlocked():
    config.model = type(config.model)(resolved)
  return config, directory


# -- Name map -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """Where one of our parameters is in a HF checkpoint: ours = M split into
  heads, M = S (or S^T for a torch Linear) or the `part`-th of its
  `parts` equal column blocks (GPT-2's fused query/key/value).

  key: the tensor's HF name. shape: S's shape by config.json.
  heads: split M's dim `heads` into (num_heads, size / num_heads).
  """
  key: str
  shape: tuple[int, ...]
  transpose: bool = False
  part: int = 0
  parts: int = 1
  heads: int | None = None
  num_heads: int = 1

  def ours(self, stored: tuple[int, ...]) -> tuple[int, ...]:
    """Our shape for a stored tensor of shape `stored`."""
    m = list(reversed(stored) if self.transpose else stored)
    m[-1] //= self.parts
    if self.heads is not None:
      m[self.heads:self.heads + 1] = [self.num_heads,
                                      m[self.heads] // self.num_heads]
    return tuple(m)

  def read(self, handle, index: tuple[slice, ...], shape) -> np.ndarray:
    """Our block `index` (slices over our `shape`) read from `handle`."""
    bounds = [s.indices(n)[:2] for s, n in zip(index, shape)]
    m_bounds = list(bounds)
    if self.heads is not None:
      (h0, h1), size = bounds[self.heads], shape[self.heads + 1]
      m_bounds[self.heads:self.heads + 2] = [(h0 * size, h1 * size)]
    width = self.shape[0 if self.transpose else -1] // self.parts
    lo, hi = m_bounds[-1]
    m_bounds[-1] = (lo + self.part * width, hi + self.part * width)
    s_bounds = list(reversed(m_bounds)) if self.transpose else m_bounds
    block = handle.get_slice(self.key)[tuple(slice(a, b) for a, b in s_bounds)]
    block = np.asarray(block)
    if self.transpose:
      block = block.T
    if self.heads is not None:
      h0, h1 = bounds[self.heads]
      k0, k1 = bounds[self.heads + 1]
      block = block.reshape(block.shape[:self.heads] + (
          h1 - h0, shape[self.heads + 1]) + block.shape[self.heads + 1:])
      block = block[(slice(None),) * (self.heads + 1) + (slice(k0, k1),)]
    return block

  def to_stored(self, ours: np.ndarray) -> np.ndarray:
    """Our array -> this tensor's share of S (its column block, if split)."""
    m = ours
    if self.heads is not None:
      m = m.reshape(m.shape[:self.heads] + (-1,) + m.shape[self.heads + 2:])
    return m.T if self.transpose else m


def _linear(key: str, d_in: int, d_out: int, heads_in: int | None = None,
            heads_out: int | None = None, *, torch: bool = True
            ) -> dict[str, _Tensor]:
  """kernel and bias of a dense layer stored as torch's Linear [out, in]
  (or GPT-2's Conv1D [in, out]), optionally split into heads."""
  shape = (d_out, d_in) if torch else (d_in, d_out)
  kernel = _Tensor(f'{key}.weight', shape, transpose=torch,
                   heads=0 if heads_in else (1 if heads_out else None),
                   num_heads=heads_in or heads_out or 1)
  bias = _Tensor(f'{key}.bias', (d_out,), heads=0 if heads_out else None,
                 num_heads=heads_out or 1)
  return {'kernel': kernel, 'bias': bias}


def _layer_norm(key: str, d: int) -> dict[str, _Tensor]:
  return {'scale': _Tensor(f'{key}.weight', (d,)),
          'bias': _Tensor(f'{key}.bias', (d,))}


def _flatten(tree: dict, prefix: str = '') -> dict[str, _Tensor]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, _Tensor):
      out[prefix + k] = v
    else:
      out.update(_flatten(v, f'{prefix}{k}/'))
  return out


def _bert_table(hf: Mapping[str, Any], prefix: str) -> dict[str, _Tensor]:
  d, f, h = hf['hidden_size'], hf['intermediate_size'], hf[
      'num_attention_heads']
  v = hf['vocab_size']
  e = f'{prefix}embeddings.'
  tree = {
      'embed': {'embedding': _Tensor(f'{e}word_embeddings.weight', (v, d))},
      'positions': {'pos_embedding': _Tensor(
          f'{e}position_embeddings.weight',
          (hf['max_position_embeddings'], d))},
      'token_types': {'embedding': _Tensor(
          f'{e}token_type_embeddings.weight',
          (hf.get('type_vocab_size', 2), d))},
      'embed_norm': _layer_norm(f'{e}LayerNorm', d),
      'pooler': _linear(f'{prefix}pooler.dense', d, d),
      'head': _linear('classifier', d, len(hf.get('id2label') or {}) or
                      hf.get('num_labels', 2)),
      'mlm_transform': _linear('cls.predictions.transform.dense', d, d),
      'mlm_norm': _layer_norm('cls.predictions.transform.LayerNorm', d),
      'mlm_bias': _Tensor('cls.predictions.bias', (v,)),
      'encoder': {},
  }
  for i in range(hf['num_hidden_layers']):
    layer = f'{prefix}encoder.layer.{i}.'
    tree['encoder'][f'block_{i}'] = {
        'attention': {
            'query': _linear(f'{layer}attention.self.query', d, d,
                             heads_out=h),
            'key': _linear(f'{layer}attention.self.key', d, d, heads_out=h),
            'value': _linear(f'{layer}attention.self.value', d, d,
                             heads_out=h),
            'out': _linear(f'{layer}attention.output.dense', d, d,
                           heads_in=h)},
        'ln_attention': _layer_norm(f'{layer}attention.output.LayerNorm', d),
        'mlp': {'hidden': _linear(f'{layer}intermediate.dense', d, f),
                'out': _linear(f'{layer}output.dense', f, d)},
        'ln_mlp': _layer_norm(f'{layer}output.LayerNorm', d)}
  return _flatten(tree)


def _gpt2_table(hf: Mapping[str, Any], prefix: str) -> dict[str, _Tensor]:
  d, h, v = hf['n_embd'], hf['n_head'], hf['vocab_size']
  f = hf.get('n_inner') or 4 * d
  tree = {
      'embed': {'embedding': _Tensor(f'{prefix}wte.weight', (v, d))},
      'positions': {'pos_embedding': _Tensor(f'{prefix}wpe.weight',
                                             (hf['n_positions'], d))},
      'decoder': {'final_norm': _layer_norm(f'{prefix}ln_f', d)},
  }
  for i in range(hf['n_layer']):
    block = f'{prefix}h.{i}.'
    qkv = {}
    for part, name in enumerate(('query', 'key', 'value')):
      qkv[name] = {
          'kernel': _Tensor(f'{block}attn.c_attn.weight', (d, 3 * d),
                            part=part, parts=3, heads=1, num_heads=h),
          'bias': _Tensor(f'{block}attn.c_attn.bias', (3 * d,), part=part,
                          parts=3, heads=0, num_heads=h)}
    tree['decoder'][f'block_{i}'] = {
        'attention': {**qkv, 'out': _linear(f'{block}attn.c_proj', d, d,
                                            heads_in=h, torch=False)},
        'ln_attention': _layer_norm(f'{block}ln_1', d),
        'mlp': {'hidden': _linear(f'{block}mlp.c_fc', d, f, torch=False),
                'out': _linear(f'{block}mlp.c_proj', f, d, torch=False)},
        'ln_mlp': _layer_norm(f'{block}ln_2', d)}
  return _flatten(tree)


def _table(hf: Mapping[str, Any], keys) -> dict[str, _Tensor]:
  """Our name -> `_Tensor`, for the checkpoint whose tensor names are
  `keys` (their prefix, 'bert.'/'transformer.' or none, is found there)."""
  if hf['model_type'] == 'bert':
    prefix = 'bert.' if any(k.startswith('bert.') for k in keys) else ''
    return _bert_table(hf, prefix)
  prefix = ('transformer.' if any(k.startswith('transformer.') for k in keys)
            else '')
  return _gpt2_table(hf, prefix)


# Old BERT checkpoints (bert-base-uncased's among them) name LayerNorm
# parameters as TF did.
_ALIASES = ((re.compile(r'LayerNorm\.weight$'), 'LayerNorm.gamma'),
            (re.compile(r'LayerNorm\.bias$'), 'LayerNorm.beta'))


def _stored_key(key: str, shapes: Mapping[str, Any]) -> str | None:
  if key in shapes:
    return key
  for pattern, alias in _ALIASES:
    if pattern.search(key) and pattern.sub(alias, key) in shapes:
      return pattern.sub(alias, key)
  return None


# -- Loading ------------------------------------------------------------------


class _Checkpoint:
  """The open safetensors files of a model directory: shapes by tensor name,
  and lazy reads."""

  def __init__(self, directory: str):
    safetensors = _safetensors()
    self.files = _weight_files(directory)
    self.handles, self.shapes, self.where = [], {}, {}
    try:
      for path in self.files:
        handle = safetensors.safe_open(path, framework='numpy')
        self.handles.append(handle)
        for key in handle.keys():
          self.shapes[key] = tuple(handle.get_slice(key).get_shape())
          self.where[key] = handle
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'{path} cannot be read as safetensors '
                        f'({str(e).splitlines()[0][:200]}); download it '
                        'again') from None

  def check_config(self, table: Mapping[str, _Tensor], directory: str,
                   hf: Mapping[str, Any]) -> None:
    """Raises ConfigError naming the first tensor whose shape is not the
    one config.json gives it (a vocabulary or size mismatch)."""
    for spec in table.values():
      key = _stored_key(spec.key, self.shapes)
      if key is not None and self.shapes[key] != spec.shape:
        sizes = ', '.join(f'{k} {hf[k]}' for k in (
            'vocab_size', 'hidden_size', 'n_embd', 'intermediate_size',
            'n_inner', 'max_position_embeddings', 'n_positions',
            'type_vocab_size') if hf.get(k) is not None)
        raise ConfigError(
            f'{directory}: tensor {key} is {self.shapes[key]} in the '
            f'safetensors but {spec.shape} by config.json ({sizes}); the '
            'weights and config.json are of different models')


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def load_params(source: str, params: Any, skip: str | None = None, *,
                what: str = 'init_from') -> tuple[Any, dict[str, list[str]]]:
  """`params` read from the HF model directory `source` ('hf:DIR' or DIR),
  but for the names that match `skip`: `checkpoint.load_params` for
  Hugging Face checkpoints, with its contract.

  `params` (boxed or not; arrays, or ShapeDtypeStructs for leaves that are
  read) come back unboxed. Every leaf must be in the checkpoint, under the
  name map of the module docstring and in the shape its HF tensor gives,
  unless `skip` (a regex, `re.search`ed in each name, e.g. '^head/')
  matches its name: those keep their values. Each leaf is read onto its
  sharding (a device's block at a time) in its dtype. Nothing in `source`
  is written.

  Returns:
    (params, report): report['loaded'], report['skipped'] (our names) and
    report['unused'] (HF tensors not read, e.g. a pretraining head).

  Raises:
    ConfigError: `source` is not a model this module reads (a `.bin`
      pickle, another architecture, a safetensors index without its
      shards, tensors that do not match config.json), or lacks a parameter
      `skip` does not match, or holds it in another shape (all such named
      in one message).
  """
  try:
    skip_re = re.compile(skip) if skip else None
  except re.error as e:
    raise ConfigError(f'init_skip {skip!r} is not a regular expression '
                      f'({e}); e.g. ^head/') from None
  directory = _dir(source)
  hf = read_config(directory)
  checkpoint = _Checkpoint(directory)
  table = _table(hf, checkpoint.shapes)
  checkpoint.check_config(table, directory, hf)
  params = nn.unbox(params)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  report = {'loaded': [], 'skipped': [], 'unused': []}
  reads, misfits = {}, []
  for path, x in leaves:
    name = _path_name(path)
    spec = table.get(name)
    key = spec and _stored_key(spec.key, checkpoint.shapes)
    if skip_re is not None and skip_re.search(name):
      report['skipped'].append(name)
    elif spec is None:
      misfits.append(f'{name} absent (no {hf["model_type"]} tensor holds it)')
    elif key is None:
      misfits.append(f'{name} absent ({spec.key})')
    elif spec.ours(checkpoint.shapes[key]) != tuple(x.shape):
      misfits.append(f'{name} ({key}) {spec.ours(checkpoint.shapes[key])} '
                     f'there, {tuple(x.shape)} here')
    else:
      report['loaded'].append(name)
      reads[name] = dataclasses.replace(spec, key=key)
  if misfits:
    raise ConfigError(
        f'{what}: Hugging Face model {directory} does not hold '
        f'{len(misfits)} parameter(s) of this model as they are here: '
        f'{listing(misfits)}; keep them as initialised with init_skip (a regex of '
        "names, e.g. '^head/'), or match the model to its config.json")
  if report['skipped'] and not reads:
    raise ConfigError(f'{what}: init_skip {skip_re.pattern!r} matches '
                      'every parameter, so nothing would be loaded; narrow it')
  read_keys = {spec.key for spec in reads.values()}
  report['unused'] = sorted(set(checkpoint.shapes) - read_keys)
  values = []
  for path, x in leaves:
    name = _path_name(path)
    values.append(x if name not in reads else _read_array(
        checkpoint, reads[name], x))
  return jax.tree_util.tree_unflatten(treedef, values), report


def _read_array(checkpoint: _Checkpoint, spec: _Tensor, like) -> jax.Array:
  """The parameter `spec` as a jax.Array of `like`'s shape, dtype and
  sharding, each device's block read from the file on its own."""
  shape, dtype = tuple(like.shape), like.dtype
  sharding = (getattr(like, 'sharding', None) or
              jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  handle = checkpoint.where[spec.key]
  blocks = {}  # Replicas of one block are read once.

  def block(index):
    bounds = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
    if bounds not in blocks:
      blocks[bounds] = spec.read(handle, index, shape).astype(dtype)
    return blocks[bounds]

  return jax.make_array_from_callback(shape, sharding, block)


def load_tokenizer(source: str) -> text_lib.HFTokenizer:
  """The tokenizer of the HF model directory `source` ('hf:DIR' or DIR):
  its tokenizer.json, with the special tokens tokenizer_config.json names
  (or the well-known ones it contains)."""
  return text_lib.HFTokenizer.from_file(
      os.path.join(_dir(source), 'tokenizer.json'))


def load_model(source: str, *, name: str | None = None,
               num_classes: int | None = None, skip: str | None = None,
               mesh: jax.sharding.Mesh | None = None, rules=None,
               dtype: str = 'float32', seed: int = 0):
  """(module, params, tokenizer) of the HF model directory `source`.

  The module is `model_config(source, name)` built (compute `dtype`;
  `num_classes` replaces a classifier's), its params laid out over `mesh`
  (default: all devices, data parallel, so replicated) by their logical
  names (`rules`, default `DEFAULT_RULES`) and read from the checkpoint
  straight into their shards (`load_params`; names matching `skip` keep a
  random initialisation from `seed`, e.g. '^head/' for a new classifier).
  Apply it as `module.apply({'params': params}, tokens)`.
  """
  config = model_config(source, name)
  if num_classes is not None:
    config['num_classes'] = num_classes
  config['dtype'] = dtype
  module = build_model(config)
  tokenizer = load_tokenizer(source)
  if mesh is None:
    mesh = mesh_lib.make_mesh({'data': -1})
  rules = rules or mesh_lib.DEFAULT_RULES
  tokens = jnp.ones((1, 2), jnp.int32)
  init = lambda rng: module.init(rng, tokens)['params']
  abstract = jax.eval_shape(init, jax.random.key(seed))
  shardings = mesh_lib.logical_shardings(abstract, mesh, rules)
  if skip:  # Those keep an initialisation, made in its shards.
    params = jax.jit(lambda rng: nn.unbox(init(rng)),
                     out_shardings=shardings)(jax.random.key(seed))
  else:  # Nothing is initialised: every parameter is read.
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        nn.unbox(abstract), shardings)
  params, _ = load_params(source, params, skip)
  return module, params, tokenizer


# -- Export -------------------------------------------------------------------


def hf_config(model: nn.Module) -> dict[str, Any]:
  """The config.json of `model` as the HF architecture it is
  (BertForSequenceClassification, BertForMaskedLM, GPT2LMHeadModel).

  Raises ConfigError for a model HF has no architecture for (a pre-LN BERT,
  sinusoidal positions, a learned mask embedding), naming what differs.
  """
  kind = type(model).__name__
  if kind not in ('BertClassifier', 'BertMLM', 'GPTLM'):
    raise ConfigError(f'a {kind} has no Hugging Face architecture; export '
                      'reads BERT (post-LN) and GPT models')
  wrong = [] if model.position_embedding == 'learned' else [
      "position_embedding='sinusoidal'"]
  act = 'gelu' if model.gelu == 'exact' else 'gelu_new'
  if kind == 'GPTLM':
    if wrong:
      raise ConfigError(f'a GPT with {wrong[0]} is no GPT-2 (learned '
                        'positions); Hugging Face has no architecture for it')
    return {
        'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2',
        'vocab_size': model.vocab_size, 'n_embd': model.d_model,
        'n_layer': model.num_layers, 'n_head': model.num_heads,
        'n_inner': model.mlp_dim, 'n_positions': model.max_len,
        'activation_function': act,
        'layer_norm_epsilon': model.layer_norm_epsilon,
        'resid_pdrop': model.dropout_rate, 'embd_pdrop': model.dropout_rate,
        'attn_pdrop': model.dropout_rate, 'bos_token_id': model.eos_id,
        'eos_token_id': model.eos_id, 'pad_token_id': model.pad_id,
        'tie_word_embeddings': True, 'scale_attn_weights': True,
        'dtype': 'float32'}
  wrong += [f'{k}={v!r}' for k, v, ok in (
      ('norm', model.norm, model.norm == 'post'),
      ('type_vocab_size', model.type_vocab_size, model.type_vocab_size > 0),
      ('embed_norm', model.embed_norm, model.embed_norm)) if not ok]
  if kind == 'BertClassifier':
    wrong += [f'{k}={v!r}' for k, v, ok in (
        ('pooler', model.pooler, model.pooler),
        ('pooling', model.pooling, model.pooling == 'cls')) if not ok]
  elif model.mask_id is None:
    wrong.append('mask_id=None (a learned mask embedding)')
  if wrong:
    raise ConfigError(
        f'model {kind} with {", ".join(wrong)} is not a Hugging Face BERT '
        "(norm='post', type_vocab_size=2, embed_norm, pooler, pooling='cls', "
        'a tokenizer mask_id: what a model started from hf: has)')
  config = {
      'model_type': 'bert', 'vocab_size': model.vocab_size,
      'hidden_size': model.d_model, 'num_hidden_layers': model.num_layers,
      'num_attention_heads': model.num_heads,
      'intermediate_size': model.mlp_dim, 'hidden_act': act,
      'hidden_dropout_prob': model.dropout_rate,
      'attention_probs_dropout_prob': model.dropout_rate,
      'max_position_embeddings': model.max_len,
      'type_vocab_size': model.type_vocab_size,
      'layer_norm_eps': model.layer_norm_epsilon, 'pad_token_id': model.pad_id,
      'position_embedding_type': 'absolute', 'dtype': 'float32'}
  if kind == 'BertMLM':
    return {'architectures': ['BertForMaskedLM'], **config}
  return {'architectures': ['BertForSequenceClassification'], **config,
          'id2label': {str(i): f'LABEL_{i}' for i in range(model.num_classes)},
          'label2id': {f'LABEL_{i}': i for i in range(model.num_classes)}}


def hf_state_dict(model: nn.Module, params: Any) -> dict[str, np.ndarray]:
  """`params` of `model` as the tensors of its HF architecture (`hf_config`),
  by HF name, float32 numpy arrays on the host."""
  config = hf_config(model)
  prefix = 'bert.' if config['model_type'] == 'bert' else 'transformer.'
  table = _table(config, [prefix])
  parts: dict[str, list[tuple[int, np.ndarray]]] = {}
  for path, x in jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]:
    name = _path_name(path)
    if name not in table:
      raise ConfigError(f'parameter {name} has no place in a Hugging Face '
                        f'{config["architectures"][0]}')
    spec = table[name]
    stored = spec.to_stored(np.asarray(jax.device_get(x), np.float32))
    parts.setdefault(spec.key, []).append((spec.part, stored))
  return {key: np.ascontiguousarray(np.concatenate(
      [a for _, a in sorted(pieces, key=lambda p: p[0])], axis=-1))
          for key, pieces in parts.items()}


def _tokenizer_files(tokenizer, max_len: int) -> dict[str, str]:
  """tokenizer.json and tokenizer_config.json of the run's tokenizer, as
  `transformers.AutoTokenizer` reads them."""
  if isinstance(tokenizer, text_lib.HFTokenizer):
    config = dict(tokenizer.config) or {
        'tokenizer_class': 'PreTrainedTokenizerFast',
        **{f'{r}_token': t for r, t in tokenizer.special_tokens.items()}}
    return {'tokenizer.json': tokenizer.tokenizer_json,
            'tokenizer_config.json': json.dumps(config, indent=2)}
  if isinstance(tokenizer, text_lib.SubwordTokenizer):
    tokenizer_json = tokenizer.to_str()
  else:
    tokenizer_json = _char_tokenizer_json(tokenizer)
  config = {'tokenizer_class': 'PreTrainedTokenizerFast',
            'pad_token': '<pad>', 'eos_token': '<eos>', 'bos_token': '<eos>',
            'model_max_length': max_len}
  if isinstance(tokenizer, text_lib.CharTokenizer):
    config['unk_token'] = '<unk>'
  return {'tokenizer.json': tokenizer_json,
          'tokenizer_config.json': json.dumps(config, indent=2)}


def _char_tokenizer_json(tokenizer: text_lib.CharTokenizer) -> str:
  """A `tokenizers` JSON that gives `tokenizer`'s ids: each character a
  word of a WordLevel vocabulary, joined back without spaces."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  vocab = {'<pad>': text_lib.PAD_ID, '<eos>': text_lib.EOS_ID, '<unk>': 2}
  vocab.update({c: i + 3 for i, c in enumerate(tokenizer.chars)})
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, '<unk>'))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(
      tokenizers.Regex(r'(?m).'), 'isolated')
  tok.decoder = tokenizers.decoders.Fuse()
  tok.add_special_tokens(['<pad>', '<eos>', '<unk>'])
  return tok.to_str()


def save_pretrained(model: nn.Module, params: Any, tokenizer, out: str) -> str:
  """Writes `model` with `params` (and `tokenizer`, if not None) to the new
  directory `out` as transformers' `save_pretrained` would: config.json,
  model.safetensors, tokenizer.json and tokenizer_config.json. Returns the
  absolute path.

  The files are written into a temporary directory beside `out` and renamed
  into place, so `out` is whole or absent. Raises ConfigError if `out`
  exists and is not empty, or for a model HF has no architecture for.
  """
  safetensors = _safetensors()
  out = os.path.abspath(os.path.expanduser(out))
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ConfigError(f'--out {out} exists and is not empty; pass a new '
                      'directory (nothing was written)')
  config = hf_config(model)
  tensors = hf_state_dict(model, params)
  files = {'config.json': json.dumps(config, indent=2) + '\n'}
  if tokenizer is not None:
    files.update(_tokenizer_files(tokenizer, model.max_len))
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.{os.path.basename(out)}.{uuid.uuid4().hex}.tmp')
  os.makedirs(tmp)
  try:
    safetensors.numpy.save_file(tensors, os.path.join(tmp, WEIGHTS_FILE),
                                metadata={'format': 'pt'})
    for name, text in files.items():
      with open(os.path.join(tmp, name), 'w') as f:
        f.write(text)
    if os.path.isdir(out):
      os.rmdir(out)  # Empty, checked above.
    os.rename(tmp, out)
  except BaseException:
    for name in os.listdir(tmp):
      os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
    raise
  return out


__all__ = ['PREFIX', 'hf_config', 'hf_state_dict', 'load_model', 'load_params',
           'load_tokenizer', 'model_config', 'read_config',
           'resolve_init_from', 'save_pretrained', 'source_dir']
