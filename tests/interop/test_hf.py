"""Hugging Face BERT and GPT-2 checkpoints in the zoo: equal logits (one
device, a 2x2x2 mesh, bfloat16), greedy generation equal to transformers',
a bit-equal round trip, the load_params contract and the refusals."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bigml_jax import ConfigError
from bigml_jax.data import text as text_lib
from bigml_jax.interop import hf
from bigml_jax.interop.hf import _Tensor
from bigml_jax.models import build_model, sampling
from bigml_jax.parallel import mesh as mesh_lib
from tests.interop.conftest import MODELS

# bfloat16 compute (float32 params) against transformers' float32: the
# largest logit difference, as a fraction of the largest logit. Measured on
# these models: 0.4-0.9%.
BF16_TOLERANCE = 0.02


def _forward(module, params, ids):
  return np.asarray(jax.jit(lambda p, x: module.apply({'params': p}, x))(
      params, ids))


@pytest.mark.parametrize('name', MODELS)
def test_logits_equal_transformers_on_one_device(name, hf_dir, reference):
  _, ids, expected = reference(name)
  module, params, _ = hf.load_model(hf_dir(name),
                                    mesh=mesh_lib.make_mesh({'data': 1},
                                                            jax.devices()[:1]))
  assert type(module).__name__ == {'bert_mlm': 'BertMLM', 'gpt2': 'GPTLM',
                                   'bert_cls': 'BertClassifier'}[name]
  np.testing.assert_allclose(_forward(module, params, ids), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_logits_equal_transformers_on_a_2x2x2_mesh(name, hf_dir, reference):
  _, ids, expected = reference(name)
  mesh = mesh_lib.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  module, params, _ = hf.load_model(hf_dir(name), mesh=mesh)
  specs = {tuple(p.sharding.spec) for p in jax.tree.leaves(params)}
  assert any('tensor' in s for s in specs) and any('fsdp' in s for s in specs)
  np.testing.assert_allclose(_forward(module, params, ids), expected,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', MODELS)
def test_bfloat16_logits_are_within_the_stated_tolerance(name, hf_dir,
                                                         reference):
  _, ids, expected = reference(name)
  module, params, _ = hf.load_model(hf_dir(name), dtype='bfloat16')
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype('float32')}
  error = np.abs(_forward(module, params, ids) - expected).max()
  assert 0 < error <= BF16_TOLERANCE * np.abs(expected).max()


def test_gpt2_greedy_generation_with_the_kv_cache_equals_generate(hf_dir,
                                                                  reference):
  import torch  # pylint: disable=g-import-not-at-top
  model, ids, _ = reference('gpt2')
  module, params, tok = hf.load_model(hf_dir('gpt2'))
  prompt = ids[:, :5]
  # Both stop a row at EOS and fill the rest of it with EOS.
  ours = np.asarray(sampling.generate(
      module, params, jnp.asarray(prompt), jax.random.key(0), num_tokens=24,
      temperature=0.0, stop_id=tok.eos_id, pad_id=tok.eos_id))
  with torch.no_grad():
    theirs = model.generate(torch.tensor(prompt, dtype=torch.long),
                            attention_mask=torch.ones(prompt.shape),
                            max_new_tokens=24, do_sample=False,
                            pad_token_id=tok.eos_id).numpy()
  # transformers stops early once every row has ended.
  theirs = np.pad(theirs, ((0, 0), (0, ours.shape[1] - theirs.shape[1])),
                  constant_values=tok.eos_id)
  np.testing.assert_array_equal(ours, theirs)
  assert len(set(ours[:, 5:].ravel())) > 8  # Not one token repeated.


@pytest.mark.parametrize('name', MODELS)
def test_hf_to_bigml_jax_to_hf_is_bit_equal(name, hf_dir, reference,
                                            tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  model, ids, expected = reference(name)
  source = hf_dir(name)
  module, params, tok = hf.load_model(source)
  out = hf.save_pretrained(module, params, tok, str(tmp_path / 'out'))
  before = load_file(os.path.join(source, 'model.safetensors'))
  after = load_file(os.path.join(out, 'model.safetensors'))
  assert sorted(after) == sorted(before)
  for key, tensor in before.items():
    assert after[key].dtype == tensor.dtype
    assert after[key].tobytes() == tensor.tobytes(), key
  back = type(model).from_pretrained(out).eval()
  pad = tok.pad_id if tok.pad_id is not None else -1
  with torch.no_grad():
    logits = back(input_ids=torch.tensor(ids, dtype=torch.long),
                  attention_mask=torch.tensor(ids != pad)).logits.numpy()
  np.testing.assert_array_equal(logits, expected)
  import transformers  # pylint: disable=g-import-not-at-top
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  text = 'Anything that can go wrong will go wrong.'
  assert theirs(text)['input_ids'] == tok.encode_batch(
      [text], special_tokens=True)[0].tolist()


def test_parameters_are_read_into_their_shards(hf_dir, monkeypatch):
  blocks = []
  read = _Tensor.read

  def spy(self, handle, index, shape):
    block = read(self, handle, index, shape)
    blocks.append((self.key, block.size, int(np.prod(self.shape))))
    return block

  monkeypatch.setattr(_Tensor, 'read', spy)
  mesh = mesh_lib.make_mesh({'data': 1, 'fsdp': 2, 'tensor': 4})
  hf.load_model(hf_dir('gpt2'), mesh=mesh)
  sizes = {}
  for key, size, total in blocks:
    sizes.setdefault(key, []).append((size, total))
  # The word embeddings [vocab, embed] are split 4 x 2: eight blocks of an
  # eighth, each read once; the fused query/key/value as heads over 4.
  wte = sizes['transformer.wte.weight']
  assert len(wte) == 8 and all(8 * s == t for s, t in wte)
  c_attn = sizes['transformer.h.0.attn.c_attn.weight']
  assert max(s for s, _ in c_attn) * 3 * 8 == c_attn[0][1]


def _random_params(config):
  """Host params of the model `config`, drawn in numpy: no compile."""
  module = build_model(config)
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(
      jax.random.key(0), jnp.ones((1, 4), jnp.int32)))['params'])
  rng = np.random.default_rng(0)
  return module, jax.tree.map(
      lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def test_load_params_contract_and_report(hf_dir):
  directory = hf_dir('bert_mlm')
  config = hf.model_config(directory, 'bert')
  _, params = _random_params({**config, 'num_classes': 5})
  with pytest.raises(ConfigError) as e:
    hf.load_params(directory, params)
  # The masked LM has no pooler and no classifier: named, with the fix.
  assert str(e.value) == (
      f'init_from: Hugging Face model {directory} does not hold 4 '
      'parameter(s) of this model as they are here: head/bias absent '
      '(classifier.bias), head/kernel absent (classifier.weight), '
      'pooler/bias absent (bert.pooler.dense.bias) and 1 more; keep them as '
      "initialised with init_skip (a regex of names, e.g. '^head/'), or "
      "match the model to its config.json")
  loaded, report = hf.load_params('hf:' + directory, params,
                                  '^(head|pooler)/')
  assert report['skipped'] == ['head/bias', 'head/kernel', 'pooler/bias',
                               'pooler/kernel']
  assert report['unused'] == [
      'cls.predictions.bias', 'cls.predictions.transform.LayerNorm.bias',
      'cls.predictions.transform.LayerNorm.weight',
      'cls.predictions.transform.dense.bias',
      'cls.predictions.transform.dense.weight']
  assert len(report['loaded']) == len(jax.tree.leaves(params)) - 4
  np.testing.assert_array_equal(loaded['head']['kernel'],
                                params['head']['kernel'])
  stored = load_file(os.path.join(directory, 'model.safetensors'))
  np.testing.assert_array_equal(
      loaded['encoder']['block_1']['mlp']['out']['kernel'],
      stored['bert.encoder.layer.1.output.dense.weight'].T)
  np.testing.assert_array_equal(
      loaded['encoder']['block_0']['attention']['query']['kernel'],
      stored['bert.encoder.layer.0.attention.self.query.weight'].T.reshape(
          32, 4, 8))
  with pytest.raises(ConfigError, match="init_skip '.' matches every "
                     'parameter, so nothing would be loaded; narrow it'):
    hf.load_params(directory, params, '.')
  _, wider = _random_params({**config, 'num_classes': 5, 'max_len': 80})
  with pytest.raises(ConfigError, match=r'positions/pos_embedding '
                     r'\(bert.embeddings.position_embeddings.weight\) '
                     r'\(64, 32\) there, \(80, 32\) here'):
    hf.load_params(directory, wider, '^(head|pooler)/')


def test_old_names_and_a_bare_bert_model_load(hf_dir, reference, tmp_path):
  """bert-base-uncased's file: LayerNorm gamma/beta; BertModel's: no
  'bert.' prefix. Both load; the encoder gives the same logits."""
  source = hf_dir('bert_cls')
  _, ids, expected = reference('bert_cls')
  tensors = load_file(os.path.join(source, 'model.safetensors'))
  renamed = {k.removeprefix('bert.').replace('LayerNorm.weight',
                                             'LayerNorm.gamma')
             .replace('LayerNorm.bias', 'LayerNorm.beta'): v
             for k, v in tensors.items() if not k.startswith('classifier')}
  shutil.copytree(source, tmp_path / 'old')
  save_file(renamed, str(tmp_path / 'old' / 'model.safetensors'))
  config = json.loads((tmp_path / 'old' / 'config.json').read_text())
  config['architectures'] = ['BertModel']
  (tmp_path / 'old' / 'config.json').write_text(json.dumps(config))
  module, params = _random_params(
      hf.model_config(str(tmp_path / 'old'), 'bert') | {'num_classes': 3})
  # The head, which BertModel lacks, kept as given: the original's.
  params['head'] = {'kernel': tensors['classifier.weight'].T,
                    'bias': tensors['classifier.bias']}
  params, report = hf.load_params(str(tmp_path / 'old'), params, '^head/')
  assert 'embed_norm/scale' in report['loaded'] and not report['unused']
  np.testing.assert_allclose(_forward(module, params, ids), expected,
                             rtol=1e-5, atol=1e-5)


def _copy(source, tmp_path, name='model'):
  target = tmp_path / name
  shutil.copytree(source, target)
  return target


def test_refusals_name_the_problem_in_one_line(hf_dir, tmp_path):
  source = hf_dir('bert_cls')
  params = hf.load_model(source)[1]
  load = lambda d: hf.load_params(str(d), params)

  pickle = _copy(source, tmp_path, 'pickle')
  os.rename(pickle / 'model.safetensors', pickle / 'pytorch_model.bin')
  with pytest.raises(ConfigError, match=(
      r'holds pytorch_model.bin but no model.safetensors: a .bin is a Python '
      'pickle, and unpickling one runs any code it holds, so it is never read '
      'here')):
    load(pickle)

  llama = _copy(source, tmp_path, 'llama')
  (llama / 'config.json').write_text(json.dumps(
      {'model_type': 'llama', 'architectures': ['LlamaForCausalLM']}))
  with pytest.raises(ConfigError, match=(
      r"holds a LlamaForCausalLM \(model_type 'llama'\), which bigml_jax does "
      r'not read; it reads bert: BertModel, .*; gpt2: GPT2LMHeadModel')):
    load(llama)

  sharded = _copy(source, tmp_path, 'sharded')
  tensors = load_file(str(sharded / 'model.safetensors'))
  os.remove(sharded / 'model.safetensors')
  keys = sorted(tensors)
  shards = {'model-00001-of-00002.safetensors': keys[:10],
            'model-00002-of-00002.safetensors': keys[10:]}
  (sharded / 'model.safetensors.index.json').write_text(json.dumps(
      {'weight_map': {k: f for f, ks in shards.items() for k in ks}}))
  with pytest.raises(ConfigError, match=(
      'names shards that are not in .*: model-00001-of-00002.safetensors, '
      'model-00002-of-00002.safetensors; download every shard beside the '
      'index')):
    load(sharded)
  for name, ks in shards.items():
    save_file({k: tensors[k] for k in ks}, str(sharded / name))
  loaded, _ = load(sharded)  # With its shards, the index loads.
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)

  missing = _copy(source, tmp_path, 'missing')
  save_file({k: v for k, v in tensors.items()
             if 'layer.1.output.dense' not in k},
            str(missing / 'model.safetensors'))
  with pytest.raises(ConfigError, match=(
      r'does not hold 2 parameter\(s\) of this model as they are here: '
      r'encoder/block_1/mlp/out/bias absent '
      r'\(bert.encoder.layer.1.output.dense.bias\), '
      r'encoder/block_1/mlp/out/kernel absent '
      r'\(bert.encoder.layer.1.output.dense.weight\);')):
    load(missing)

  vocab = _copy(source, tmp_path, 'vocab')
  config = json.loads((vocab / 'config.json').read_text())
  (vocab / 'config.json').write_text(json.dumps(
      dict(config, vocab_size=config['vocab_size'] + 10)))
  with pytest.raises(ConfigError, match=(
      r'tensor bert.embeddings.word_embeddings.weight is \(400, 32\) in the '
      r'safetensors but \(410, 32\) by config.json \(vocab_size 410, '
      r'hidden_size 32, .*\); the weights and config.json are of different '
      'models')):
    load(vocab)


def test_a_run_config_takes_the_architecture_from_config_json(hf_dir):
  directory = hf_dir('bert_cls')
  config = ml_collections.ConfigDict({
      'init_from': 'hf:' + directory,
      'model': {'name': 'bert', 'dropout_rate': 0.2, 'remat': 'full'}})
  resolved, found = hf.resolve_init_from(config)
  assert found == directory and config.model.to_dict() == {
      'name': 'bert', 'dropout_rate': 0.2, 'remat': 'full'}  # Not changed.
  assert resolved.model.to_dict() == {
      'name': 'bert', 'vocab_size': 400, 'num_layers': 2, 'd_model': 32,
      'num_heads': 4, 'mlp_dim': 48, 'max_len': 64,
      'position_embedding': 'learned', 'norm': 'post', 'type_vocab_size': 2,
      'embed_norm': True, 'dropout_rate': 0.2, 'gelu': 'exact',
      'layer_norm_epsilon': 1e-12, 'pad_id': 0, 'pooling': 'cls',
      'pooler': True, 'remat': 'full'}
  config.dataset = {'max_length': 65}
  with pytest.raises(ConfigError, match=(
      r'dataset.max_length 65 exceeds the 64 positions of init_from hf:.*; '
      r'set dataset.max_length to at most 64')):
    hf.resolve_init_from(config)
  config.model.d_model = 128
  with pytest.raises(ConfigError, match=(
      r'init_from hf:.* fixes the architecture, but the config sets '
      r'model.d_model=128 \(config.json: 32\); remove those fields')):
    hf.resolve_init_from(config)
  config.model = {'name': 'gpt'}
  with pytest.raises(ConfigError, match="holds a bert model, which loads "
                     "into model.name bert or bert_mlm, not 'gpt'"):
    hf.resolve_init_from(config)
  assert hf.resolve_init_from(ml_collections.ConfigDict(
      {'init_from': '/runs/a', 'model': {}}))[1] is None


def test_export_refuses_models_hf_has_no_architecture_for():
  bert = build_model({'name': 'bert', 'vocab_size': 10, 'num_classes': 2})
  with pytest.raises(ConfigError, match=(
      r"model BertClassifier with norm='pre', type_vocab_size=0, "
      r"embed_norm=False, pooler=False is not a Hugging Face BERT")):
    hf.hf_config(bert)
  gpt = build_model({'name': 'gpt', 'vocab_size': 10,
                     'position_embedding': 'sinusoidal'})
  with pytest.raises(ConfigError, match="a GPT with position_embedding="
                     "'sinusoidal' is no GPT-2"):
    hf.hf_config(gpt)


@pytest.mark.parametrize('kind', ['char', 'subword'])
def test_a_gpt_trained_here_exports_as_gpt2_with_its_tokenizer(kind,
                                                               tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  texts = ['And God said, Let there be light.\n\tAnd there was light!',
           'ünïcode 日本語']
  tok = text_lib.train_tokenizer(kind, texts, vocab_size=300)
  module, params = _random_params({
      'name': 'gpt', 'vocab_size': tok.vocab_size, 'num_layers': 1,
      'd_model': 16, 'num_heads': 2, 'mlp_dim': 32, 'max_len': 64})
  out = hf.save_pretrained(module, params, tok, str(tmp_path / 'gpt'))
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  for text in texts + ['never seen: zq']:
    assert theirs(text)['input_ids'] == tok.encode(text).tolist()
  assert (theirs.pad_token_id, theirs.eos_token_id) == (0, 1)
  model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  ids = tok.encode(texts[0])[None, :32]
  with torch.no_grad():
    expected = model(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(_forward(module, params, ids), expected,
                             rtol=1e-5, atol=1e-5)
