"""`python -m experiments.explain` on tiny trained runs: trained on one
device, explained on all 8 (the config's mesh, data=-1, as on a new
machine), so the checkpoint is read onto another mesh."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from bigml_jax import ConfigError, train_and_evaluate
from experiments.explain import explain_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _config(data_dir, model, dataset, **dataset_fields):
  return ml_collections.ConfigDict({
      'seed': 0, 'model': model,
      'dataset': {'name': dataset, 'train_split': 'train',
                  'eval_split': 'test', 'data_dir': data_dir,
                  **dataset_fields},
      'batch_size': 16, 'total_steps': 8, 'log_every': 8, 'eval_every': 8,
      'checkpoint_every': 8, 'max_to_keep': 1,
      'optimizer': {'name': 'adam', 'learning_rate': 3e-3,
                    'schedule': 'constant', 'warmup_steps': 0,
                    'weight_decay': 0.0, 'grad_clip_norm': 0.0},
      'mesh': {'data': -1, 'fsdp': 1, 'tensor': 1}})


@pytest.fixture(scope='module')
def image_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('cnn'))
  train_and_evaluate(_config(data_dir, {'name': 'cnn', 'channels': (4,),
                                        'dense': (16,)}, 'digits'), workdir,
                     devices=jax.devices()[:1])
  return workdir


@pytest.fixture(scope='module')
def text_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp('bert'))
  model = {'name': 'bert', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
           'mlp_dim': 32, 'max_len': 48, 'pooling': 'mean',
           'dropout_rate': 0.0}
  train_and_evaluate(_config(data_dir, model, 'fortunes', tokenizer='char',
                             max_length=48), workdir,
                     devices=jax.devices()[:1])
  return workdir


@pytest.fixture
def mlp_config_only(tmp_path, image_run):
  """A workdir with an MLP's config.json and no checkpoint."""
  with open(os.path.join(image_run, 'config.json')) as f:
    config = json.load(f)
  config['model'] = {'name': 'mlp', 'features': [8]}
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(config, f)
  return str(tmp_path)


def _json(path):
  with open(path) as f:
    return json.load(f)


def _png_size(path):
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    return image.size


def test_image_run_integrated_gradients(image_run, tmp_path):
  out = str(tmp_path / 'out')
  paths = explain_run(image_run, 'integrated_gradients', num_examples=3,
                      steps=32, out=out)
  assert [os.path.basename(p) for p in paths] == [
      'integrated_gradients.png', 'integrated_gradients.json']
  width, height = _png_size(paths[0])
  assert width > 600 and height > 150  # 11 columns, 3 rows.
  record = _json(paths[1])
  assert record['step'] == 8 and record['classes'] == [str(i)
                                                       for i in range(10)]
  examples = record['examples']
  assert [e['label'] for e in examples] == [0, 1, 2]  # One of each class.
  for e in examples:
    assert np.asarray(e['input']).shape == (8, 8, 1)
    assert e['predicted'] == int(np.argmax(e['logits']))
    sums = [np.sum(e['attributions'][name]) for name in record['classes']]
    assert all(np.shape(e['attributions'][name]) == (8, 8, 1)
               for name in record['classes'])
    # Completeness: each class's attributions sum to its logit's gap.
    gaps = np.subtract(e['logits'], e['baseline_logits'])
    np.testing.assert_allclose(sums, gaps, atol=0.02 * np.abs(gaps).max())


def test_occlusion_of_own_npy_and_image_file(image_run, tmp_path):
  images = np.random.default_rng(0).uniform(size=(2, 8, 8)).astype(
      np.float32)
  np.save(tmp_path / 'two.npy', images)
  record = _json(explain_run(image_run, 'occlusion', inputs=str(
      tmp_path / 'two.npy'), out=str(tmp_path / 'a'), patch=4)[1])
  assert len(record['examples']) == 2
  np.testing.assert_allclose(record['examples'][1]['input'],
                             images[1, ..., None], rtol=1e-6)
  assert record['examples'][0]['label'] is None
  # Occlusion with 4x4 windows: constant over each window.
  heat = np.asarray(record['examples'][0]['attributions']['3'])[..., 0]
  np.testing.assert_allclose(heat[:4, :4], heat[0, 0], rtol=1e-6)
  # An image file is resized to the run's 8x8 (a 16x16 white square -> 1).
  Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / 'w.png')
  record = _json(explain_run(image_run, 'occlusion', inputs=str(
      tmp_path / 'w.png'), out=str(tmp_path / 'b'), patch=4)[1])
  np.testing.assert_allclose(record['examples'][0]['input'],
                             np.ones((8, 8, 1)), rtol=1e-6)


def test_text_run_token_attributions_of_own_lines(text_run, tmp_path):
  lines = ['Beam me up, Scotty.', 'Anything that can go wrong will.']
  (tmp_path / 'lines.txt').write_text('\n'.join(lines) + '\n\n')
  paths = explain_run(text_run, 'gradient_x_input', inputs=str(
      tmp_path / 'lines.txt'), out=str(tmp_path / 'out'))
  assert [os.path.basename(p) for p in paths] == [
      'gradient_x_input.png', 'gradient_x_input.html',
      'gradient_x_input.json']
  record = _json(paths[2])
  assert record['classes'] == ['murphy', 'startrek', 'zippy']
  for line, e in zip(lines, record['examples']):
    assert ''.join(e['tokens']) == line  # Characters: one token each.
    assert all(len(v) == len(line) for v in e['attributions'].values())
  with open(paths[1], encoding='utf-8') as f:
    page = f.read()
  assert page.count('<span title=') == sum(map(len, lines))
  assert 'Scotty' not in page  # One span per character ...
  assert '>S</span>' in page  # ... each coloured.


def test_text_run_attention_and_neighbours(text_run, tmp_path):
  paths = explain_run(text_run, 'attention', num_examples=2,
                      out=str(tmp_path))
  assert sorted(map(os.path.basename, paths)) == sorted([
      'attention_example0.png', 'attention_example1.png',
      'attention_rollout.png', 'attention.html', 'attention.json'])
  record = _json(os.path.join(tmp_path, 'attention.json'))
  assert record['layers'] == ['encoder/block_0/attention']
  for e in record['examples']:
    n = len(e['tokens'])
    weights = np.asarray(e['weights'])  # [layers, heads, n, n]
    assert weights.shape == (1, 2, n, n)
    # Real tokens attend only to real tokens, so the crop keeps each row.
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(sum(e['rollout_relevance']), 1.0, rtol=1e-5)
  (tmp_path / 'words.txt').write_text('e\nt - e + a\n')
  record = _json(explain_run(text_run, 'neighbours', inputs=str(
      tmp_path / 'words.txt'), num_neighbours=4, out=str(tmp_path))[1])
  assert [q['query'] for q in record['queries']] == ['e', 't - e + a']
  first = record['queries'][0]['neighbours']
  assert len(first) == 4 and 'e' not in [n['token'] for n in first]
  cosines = [n['cosine'] for n in first]
  assert cosines == sorted(cosines, reverse=True)


def test_bad_input_is_one_line_and_writes_nothing(image_run, text_run,
                                                  mlp_config_only, tmp_path):
  out = tmp_path / 'out'
  wrong = tmp_path / 'wrong.npy'
  np.save(wrong, np.zeros((28, 28), np.float32))
  (tmp_path / 'greek.txt').write_text('\u03b1\u03b2\u03b3 is Greek\n')
  cases = [
      (mlp_config_only, 'attention', {}, "model 'mlp' has no attention; "
       '--method=attention needs one of bert, bert_mlm, conv_attention_cnn, '
       'gpt, vit'),
      (mlp_config_only, 'saliency', {}, 'holds no checkpoint'),
      (image_run, 'saliency', {'inputs': str(wrong)},
       r'holds shape \(28, 28\); this run reads images 8x8x1'),
      (text_run, 'saliency', {'inputs': str(tmp_path / 'greek.txt')},
       "line 1 has characters the model never saw in training \\('"
       '\u03b1\u03b2\u03b3'),
      (text_run, 'occlusion', {}, 'occlusion is for image runs'),
      (image_run, 'neighbours', {}, 'needs a text run'),
      (image_run, 'saliency', {'step': 3}, 'checkpoints/3 .*steps 8'),
      (image_run, 'occlusion', {'patch': 9}, 'patch must be 1 to 8 pixels'),
  ]
  for workdir, method, kwargs, message in cases:
    with pytest.raises(ConfigError, match=message):
      explain_run(workdir, method, out=str(out), **kwargs)
    assert not out.exists()


def test_cli_prints_the_error_line_and_exits_1(mlp_config_only):
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.explain',
       f'--workdir={mlp_config_only}', '--method=attention'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "error: model 'mlp' has no attention; --method=attention needs one of "
      'bert, bert_mlm, conv_attention_cnn, gpt, vit')
  assert os.listdir(mlp_config_only) == ['config.json']
