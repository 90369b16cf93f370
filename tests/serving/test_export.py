"""Export and load: outputs equal the model's, generation equals
`sampling.generate`, quantization, version refusal, input checks."""

import functools
import json
import os
import shutil
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigml_jax import ConfigError, build_model
from bigml_jax.config import load_saved_config
from bigml_jax.data import pipeline
from bigml_jax.data import text as text_lib
from bigml_jax.models import sampling
from bigml_jax.serving import artifact, export, quantize
from bigml_jax.serving import load, InputError
from experiments.export import export_workdir
from tests.serving.conftest import CNN, GPT, MAX_NEW_TOKENS

_RNG = np.random.default_rng(0)
_TOKENIZER = text_lib.CharTokenizer('abcdefghijklmnopqrstuvwxyz .,')
_IMAGE_FAMILIES = {
    'mlp': {'name': 'mlp', 'features': (16,)},
    'cnn': CNN,
    'conv_attention_cnn': {'name': 'conv_attention_cnn', 'channels': (4, 8),
                           'dense': (16,), 'num_heads': 2},
    'vit': {'name': 'vit', 'patch_size': 4, 'd_model': 16, 'num_layers': 1,
            'num_heads': 2, 'mlp_dim': 16},
}
_TEXT_FAMILIES = {
    'rnn': {'name': 'rnn_classifier', 'cell': 'lstm', 'embed_dim': 8,
            'hidden_dim': 8},
    'bert': {'name': 'bert', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
             'mlp_dim': 16, 'max_len': 32, 'dropout_rate': 0.0},
}


def _params(workdir, step=10):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'state'))['params']


def _apply(model):
  return jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))


@pytest.mark.parametrize('family', sorted(_IMAGE_FAMILIES) +
                         sorted(_TEXT_FAMILIES))
def test_every_family_exports_bit_equal_logits(family, tmp_path):
  text = family in _TEXT_FAMILIES
  config = (_TEXT_FAMILIES if text else _IMAGE_FAMILIES)[family]
  extra = {'vocab_size': _TOKENIZER.vocab_size} if text else {}
  model = build_model(config, num_classes=3, **extra)
  if text:
    x = _RNG.integers(0, _TOKENIZER.vocab_size, (7, 32)).astype(np.int32)
    x[:, 20:] = 0  # Padding, as the data pipeline pads.
    spec = {'kind': 'text', 'max_length': 32}
  else:
    x = _RNG.random((7, 8, 8, 1), np.float32)
    spec = {'kind': 'image', 'shape': [8, 8, 1], 'dtype': 'uint8'}
  params = jax.jit(model.init)(jax.random.key(1), x[:1])['params']
  export.export_model(str(tmp_path / 'out'), model, params, kind='classifier',
                      input_spec=spec, class_names=['a', 'b', 'c'],
                      tokenizer=_TOKENIZER if text else None)
  served = load(str(tmp_path / 'out'))
  out = served.logits(x)
  ref = np.asarray(_apply(model)(nn.unbox(params), x))
  np.testing.assert_array_equal(out['logits'], ref)
  np.testing.assert_allclose(out['probabilities'], jax.nn.softmax(ref),
                             rtol=1e-6)
  manifest = served.manifest
  assert manifest['platforms'] == ['cpu', 'cuda', 'tpu']
  assert manifest['classes'] == ['a', 'b', 'c']
  # Symbolic batch, and symbolic length for the text models.
  assert manifest['functions']['predict']['inputs'] == (
      {'text': 'int32[b,l]'} if text else {'image': 'float32[b,8,8,1]'})
  assert manifest['params']['count'] == sum(
      v.size for v in jax.tree.leaves(nn.unbox(params)))


def test_the_artifact_gives_the_runs_eval_outputs(cnn_run, cnn_export):
  """Batches of 1, 7 and 64 and the run's eval batches (32) through one
  artifact: logits bit-equal to the run's model, accuracy its eval's."""
  config = load_saved_config(cnn_run)
  sources = pipeline.load_sources(config.dataset)
  preprocess = pipeline.make_preprocess(config.dataset)
  model = build_model(config.model, num_classes=10)
  params = _params(cnn_run)
  served = load(cnn_export)
  raw = [sources.eval[i]['image'] for i in range(len(sources.eval))]
  images = served.batch([served.preprocess_one(r) for r in raw])
  np.testing.assert_array_equal(
      images, preprocess(sources.eval.read_batch(range(len(raw))))['image'])
  for size in (1, 7, 64):
    np.testing.assert_array_equal(served.logits(images[:size])['logits'],
                                  _apply(model)(params, images[:size]))
  correct = 0
  for batch in pipeline.eval_batches(sources.eval, preprocess,
                                     global_batch_size=config.batch_size):
    logits = served.logits(batch['image'])['logits']
    np.testing.assert_array_equal(logits, _apply(model)(params,
                                                        batch['image']))
    correct += ((logits.argmax(-1) == batch['label']) * batch['mask']).sum()
  rows = [json.loads(l) for l in open(os.path.join(cnn_run, 'metrics.jsonl'))]
  eval_accuracy = [r for r in rows if r['split'] == 'eval'][-1]['accuracy']
  assert correct / len(raw) == pytest.approx(eval_accuracy, abs=1e-9)
  assert served.manifest['source'] == {'workdir': cnn_run, 'step': 10,
                                       'dataset': 'digits'}
  assert served.classes == [str(i) for i in range(10)]
  # One executable per batch shape: 360 examples make 12 batches of 32.
  assert sorted(tuple(s[0]) for s in served.info['compiled']) == [
      (1, 8, 8, 1), (7, 8, 8, 1), (32, 8, 8, 1), (64, 8, 8, 1)]


def _generate(model, params, ids, rng=jax.random.key(0), **options):
  """`sampling.generate`'s new tokens for one prompt, jitted (one compile
  per prompt length and options, as eagerly, but faster)."""
  generate = jax.jit(functools.partial(
      sampling.generate, model, num_tokens=MAX_NEW_TOKENS,
      stop_id=text_lib.EOS_ID, pad_id=text_lib.PAD_ID, **options))
  return np.asarray(generate(params, jnp.asarray([ids]), rng)[0, len(ids):])


def test_generation_equals_sampling_generate(gpt_run, gpt_export):
  tokenizer = text_lib.load_tokenizer(os.path.join(gpt_run, 'tokenizer.json'))
  model = build_model(GPT, vocab_size=tokenizer.vocab_size)
  params = _params(gpt_run)
  served = load(gpt_export)
  prompts = ['And God', 'In the']
  ids = [served.encode_prompt(p) for p in prompts]
  want = [_generate(model, params, i, temperature=0.0) for i in ids]
  # Prompts of two lengths in one batch: the shorter prefilled whole, the
  # longer's last token fed through the decode steps; each row as alone.
  # (The server prefills EOS alone: compared in test_server.py.)
  new = served.generate_ids([ids[0], ids[1], ids[0]],
                            [served.options(temperature=0.0)] * 3)
  for row, r in zip(new, [0, 1, 0]):
    np.testing.assert_array_equal(row, want[r])
  # Sampled: one row with seed s draws what generate draws with key(s).
  options = {'temperature': 0.8, 'top_k': 5, 'top_p': 0.9}
  drawn = served.generate_ids([ids[0]], [served.options(seed=5, **options)])
  np.testing.assert_array_equal(drawn[0], _generate(
      model, params, ids[0], rng=jax.random.key(5), **options))
  assert served([prompts[0]], seed=5, **options) == [
      tokenizer.decode(drawn[0])]
  assert served.manifest['generation']['max_prompt_tokens'] == (
      GPT['max_len'] - MAX_NEW_TOKENS - 1)


@pytest.mark.parametrize('options, message', [
    ({'max_new_tokens': 0}, r'max_new_tokens must be 1 to 8, got 0'),
    ({'temperature': -1.0}, r'temperature and top_k must be >= 0 and top_p'),
    ({'top_p': 0.0}, r'top_p in \(0, 1\]'),
    ({'seed': 2**32}, r'seed must be in \[0, 2\*\*32\)'),
    ({'top_k': 1.5}, r'top_k must be an integer, not 1.5'),
])
def test_generation_options_are_checked(gpt_export, options, message):
  with pytest.raises(InputError, match=message):
    load(gpt_export)(['And'], **options)


def test_prompts_are_checked(gpt_export):
  served = load(gpt_export)
  with pytest.raises(InputError, match=r"never saw in training \('\u00e9'\)"):
    served(['J\u00e9sus'])
  with pytest.raises(InputError, match='the prompt is 20 tokens; this model '
                     'takes at most 15'):
    served(['a' * 20])


def test_int8_shrinks_the_weights_and_keeps_the_predictions(cnn_run,
                                                             cnn_export,
                                                             tmp_path):
  params = export.flat_params(_params(cnn_run))
  stored = quantize.quantize_int8(params)
  for name, w in params.items():
    if w.ndim >= 2:  # Each weight within half a step of its channel's scale.
      assert stored[name].dtype == np.int8
      error = np.abs(quantize.dequantize(stored)[name] - w)
      assert np.all(error <= stored[name + ':scale'] / 2 + 1e-7)
    else:
      assert stored[name] is w
  manifest = export_workdir(cnn_run, str(tmp_path / 'int8'), quantize='int8')
  sizes = manifest['params']
  assert sizes['quantization'] == 'int8'
  assert sizes['stored_bytes'] < 0.3 * sizes['float32_bytes']
  # The file: npz adds ~200 bytes per array, a lot beside 9 KB of weights.
  assert os.path.getsize(tmp_path / 'int8' / 'params.npz') < 0.6 * (
      os.path.getsize(os.path.join(cnn_export, 'params.npz')))
  images = _RNG.integers(0, 256, (64, 8, 8, 1)).astype(np.uint8)
  served = load(str(tmp_path / 'int8'))
  batch = served.batch(list(images))
  want = _apply(build_model(CNN, num_classes=10))(
      nn.unbox(_params(cnn_run)), batch)
  got = served.logits(batch)['logits']
  assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
  assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize('change, message', [
    (lambda m: m['versions'].update(serialization=99),
     r'needs jax 0.10.2 or a jax that reads serialization version 99 and '
     r'calling convention \d+; this jax 0.10.2 reads serialization versions '
     r'up to \d+ and calling conventions \d+-\d+: install jax>=0.10.2$'),
    (lambda m: m['versions'].update(calling_convention=1, jax='0.4.1'),
     r'needs jax 0.4.1 or .* calling convention 1; .*: export the run again '
     'with this jax$'),
    (lambda m: m.update(format_version=2),
     r'is artifact format 2, which needs bigml_jax 0.1.0; this bigml_jax '
     r'\S+ reads format 1$'),
    (lambda m: m.update(format='other'), 'is not a bigml_jax export'),
    (lambda m: m.update(platforms=['tpu']),
     r'was exported for tpu, not cpu; export it again with --platforms=cpu$'),
])
def test_incompatible_artifacts_are_refused_in_one_line(cnn_export, tmp_path,
                                                        change, message):
  copy = str(tmp_path / 'copy')
  shutil.copytree(cnn_export, copy)
  manifest = json.load(open(os.path.join(copy, artifact.MANIFEST)))
  change(manifest)
  json.dump(manifest, open(os.path.join(copy, artifact.MANIFEST), 'w'))
  with pytest.raises(artifact.ArtifactError, match=message) as e:
    load(copy)
  assert '\n' not in str(e.value)


def test_damaged_or_missing_artifacts(cnn_export, tmp_path):
  with pytest.raises(artifact.ArtifactError, match='holds no manifest.json'):
    load(str(tmp_path))
  copy = str(tmp_path / 'copy')
  shutil.copytree(cnn_export, copy)
  with open(os.path.join(copy, 'predict.jax'), 'r+b') as f:
    f.truncate(100)
  with pytest.raises(artifact.ArtifactError, match='predict.jax cannot be '
                     r'read \(.*\); export the run again'):
    load(copy)


def test_export_writes_nothing_into_a_used_directory(cnn_run, tmp_path):
  (tmp_path / 'used').mkdir()
  (tmp_path / 'used' / 'mine.txt').write_text('keep')
  with pytest.raises(ConfigError, match='already exists and is not empty'):
    export_workdir(cnn_run, str(tmp_path / 'used'))
  with pytest.raises(ConfigError, match='--platforms takes cpu, cuda, rocm '
                     'and tpu, got cpu,gpu'):
    export_workdir(cnn_run, str(tmp_path / 'new'), platforms=['cpu', 'gpu'])
  with pytest.raises(ConfigError, match=r'--step \S+/checkpoints/3 is not a '
                     r'finished checkpoint; \S+/checkpoints has steps 10$'):
    export_workdir(cnn_run, str(tmp_path / 'new'), step=3)
  assert os.listdir(tmp_path / 'used') == ['mine.txt']
  with pytest.raises(ConfigError, match='max_new_tokens must be 1 to 22'):
    export.export_model(
        str(tmp_path / 'gpt'), build_model(GPT, vocab_size=5),
        build_model(GPT, vocab_size=5).init(
            jax.random.key(0), jnp.zeros((1, 24), jnp.int32))['params'],
        kind='generator', tokenizer=_TOKENIZER, max_new_tokens=23)
  assert sorted(os.listdir(tmp_path)) == ['used']  # No temporary left.


@pytest.mark.parametrize('value, message', [
    (np.zeros((8, 7)), r'an image must be 8x8x1, got shape \[8, 7\]'),
    (np.full((8, 8), 0.5), r'pixel values must be integers in 0..255 '
     r"\(the run's images were uint8\)"),
    (np.full((8, 8), 256), r'integers in 0..255'),
    ([[1, 2], [3]], 'the rows have different lengths'),
    ([['a'] * 8] * 8, 'of numbers, not str'),
])
def test_bad_images_are_named(cnn_export, value, message):
  with pytest.raises(InputError, match=message):
    load(cnn_export)([value])


def test_images_as_lists_or_2d_give_the_same_prediction(cnn_export):
  served = load(cnn_export)
  image = _RNG.integers(0, 256, (8, 8)).astype(np.uint8)
  a, b = served([image.tolist(), image[..., None]])
  assert a == b and len(a['probabilities']) == 10
  assert a['label'] == str(int(np.argmax(a['probabilities'])))


@pytest.mark.parametrize('task', ['gan', 'mlm'])
def test_runs_that_neither_classify_nor_generate_are_refused(task, tmp_path):
  run = types.SimpleNamespace(
      config=ml_collections.ConfigDict({'task': task,
                                        'dataset': {'name': 'any'}}),
      tokenizer=None, workdir='/runs/x', step=5, task=None, params=None,
      sources=None)
  with pytest.raises(ConfigError, match=f'/runs/x is a {task} run; export '
                     'serves classifiers and language models'):
    export.export_run(run, str(tmp_path / 'out'))
  assert not os.listdir(tmp_path)
