"""train_and_evaluate end to end: sharding invariance, resume, reshard."""

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigml_jax import ConfigError, train_and_evaluate
from bigml_jax.data import text as text_lib
from bigml_jax.tasks import build_task


def _train_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {r['step']: r['loss'] for r in rows if r['split'] == 'train'}


def _params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return jax.device_get(ocp.StandardCheckpointer().restore(path)['params'])


def _assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


# float32 sums reduced in a different order on 8 shards than on 1 device
# differ in the last bits; over 20 steps that stays far below this.
SHARDING_TOL = dict(rtol=1e-4, atol=1e-5)


def test_one_device_and_data_fsdp_mesh_train_the_same(tiny_config, tmp_path):
  one = train_and_evaluate(tiny_config(), tmp_path / 'one',
                           devices=jax.devices()[:1])
  mesh = train_and_evaluate(tiny_config(**{'mesh.data': 4, 'mesh.fsdp': 2}),
                            tmp_path / 'mesh')
  l1, l8 = _train_losses(tmp_path / 'one'), _train_losses(tmp_path / 'mesh')
  assert sorted(l1) == list(range(1, 21))
  np.testing.assert_allclose([l8[s] for s in l1], list(l1.values()),
                             **SHARDING_TOL)
  assert one['eval_loss'] == pytest.approx(mesh['eval_loss'], rel=1e-4)
  _assert_trees_close(_params(tmp_path / 'one', 20),
                      _params(tmp_path / 'mesh', 20), **SHARDING_TOL)
  # It learns: the loss falls and test accuracy beats chance (10%) by far.
  assert np.mean([l1[s] for s in range(16, 21)]) < 0.75 * l1[1]
  assert one['eval_accuracy'] > 0.6


def test_resume_equals_uninterrupted_run(tiny_config, tmp_path):
  """Train 10 steps, stop, rerun to 20 == one 20-step run: params, optimizer
  state, step, rng (dropout) and data position are all restored."""
  full = train_and_evaluate(tiny_config(), tmp_path / 'full')
  workdir = tmp_path / 'resumed'
  first = train_and_evaluate(tiny_config(total_steps=10), workdir)
  assert first['step'] == 10
  resumed = train_and_evaluate(tiny_config(), workdir)
  assert resumed['step'] == 20
  _assert_trees_close(_params(workdir, 20), _params(tmp_path / 'full', 20),
                      rtol=1e-6, atol=1e-7)
  assert resumed['eval_loss'] == pytest.approx(full['eval_loss'], rel=1e-6)
  losses = _train_losses(workdir)
  np.testing.assert_allclose(
      [losses[s] for s in range(11, 21)],
      [_train_losses(tmp_path / 'full')[s] for s in range(11, 21)], rtol=1e-6)


def test_restore_onto_a_different_mesh(tiny_config, tmp_path):
  """Saved on a 4x2 data x fsdp mesh of 8 devices, resumed on 2 devices and
  on a 2x4 mesh (parameters sharded 4 ways): the same training continues."""
  reference = tmp_path / 'reference'
  train_and_evaluate(tiny_config(), reference)
  for name, cfg, devices in [
      ('two', tiny_config(), jax.devices()[:2]),
      ('2x4', tiny_config(**{'mesh.data': 2, 'mesh.fsdp': 4}), None)]:
    workdir = tmp_path / name
    train_and_evaluate(tiny_config(total_steps=10, **{'mesh.data': 4,
                                                      'mesh.fsdp': 2}), workdir)
    result = train_and_evaluate(cfg, workdir, devices=devices)
    assert result['step'] == 20
    _assert_trees_close(_params(workdir, 20), _params(reference, 20),
                        **SHARDING_TOL)


def test_workdir_outputs(tiny_config, tmp_path):
  result = train_and_evaluate(tiny_config(total_steps=20, log_every=5),
                              tmp_path)
  # Plain Python numbers, as its annotation says: a caller can json.dump it.
  assert all(type(v) in (int, float) for v in result.values()), result
  assert json.loads(json.dumps(result))['eval_accuracy'] == result[
      'eval_accuracy']
  names = os.listdir(tmp_path)
  assert 'config.json' in names
  assert any(n.startswith('events.out.tfevents') for n in names)
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['features'] == [32]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '20']
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  train = [r['step'] for r in rows if r['split'] == 'train']
  assert train == [1, 5, 10, 15, 20]
  evals = [r for r in rows if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [10, 20]
  assert set(evals[0]) == {'step', 'split', 'loss', 'accuracy'}
  assert {'loss', 'accuracy', 'learning_rate', 'grad_norm', 'steps_per_sec',
          'examples_per_sec'} <= set(rows[0])


def test_text_run_keeps_its_tokenizer_for_the_resume(tiny_config, tmp_path,
                                                     monkeypatch):
  config = tiny_config(total_steps=4, eval_every=4, checkpoint_every=2)
  config.model = ml_collections.ConfigDict(
      {'name': 'rnn_classifier', 'cell': 'rnn', 'embed_dim': 8,
       'hidden_dim': 8})
  config.dataset.name = 'fortunes'
  config.dataset.tokenizer = 'char'
  config.dataset.max_length = 32
  config.total_steps = 2
  train_and_evaluate(config, tmp_path)
  assert (tmp_path / 'tokenizer.json').exists()

  def no_training(*args, **kwargs):
    raise AssertionError('a resumed run must not train a tokenizer')
  monkeypatch.setattr(text_lib, 'train_tokenizer', no_training)
  config.total_steps = 4
  assert train_and_evaluate(config, tmp_path)['step'] == 4


def test_init_from_fine_tunes_a_pretrained_encoder(tiny_config, tmp_path,
                                                   monkeypatch):
  """An MLM run's encoder, and its tokenizer, start a classifier run; the
  classifier's new head is initialised, and a resume ignores init_from."""
  encoder = {'num_layers': 1, 'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
             'max_len': 32, 'dropout_rate': 0.0}
  pre = tiny_config(total_steps=3, eval_every=3, checkpoint_every=3,
                    task='mlm')
  pre.model = ml_collections.ConfigDict({'name': 'bert_mlm', **encoder})
  pre.dataset.name = 'fortunes'
  pre.dataset.tokenizer = 'char'
  pre.dataset.max_length = 32
  train_and_evaluate(pre, tmp_path / 'pre', devices=jax.devices()[:1])

  def no_training(*args, **kwargs):
    raise AssertionError("fine-tuning must read the pretrained run's tokenizer")
  monkeypatch.setattr(text_lib, 'train_tokenizer', no_training)
  tune = tiny_config(total_steps=2, eval_every=2, checkpoint_every=1)
  tune.model = ml_collections.ConfigDict(
      {'name': 'bert', 'pooling': 'mean', **encoder})
  tune.dataset = pre.dataset
  # Learning rate 0: the saved step-1 params are the loaded ones.
  tune.optimizer.learning_rate = 0.0
  tune.init_from = str(tmp_path / 'pre')
  with pytest.raises(ConfigError, match='head/bias absent, head/kernel absent'):
    train_and_evaluate(tune, tmp_path / 'tune', devices=jax.devices()[:1])
  assert not os.path.exists(tmp_path / 'tune')
  tune.init_skip = '^head/'
  train_and_evaluate(tune, tmp_path / 'tune', devices=jax.devices()[:1])

  assert ((tmp_path / 'tune' / 'tokenizer.json').read_text() ==
          (tmp_path / 'pre' / 'tokenizer.json').read_text())
  pre_params, tuned = _params(tmp_path / 'pre', 3), _params(tmp_path / 'tune', 1)
  for name in ('embed', 'positions', 'encoder'):
    _assert_trees_close(tuned[name], pre_params[name], rtol=0, atol=0)
  assert 'head' in tuned and 'mlm_bias' not in tuned

  # A resumed run continues from its own checkpoint: init_from is not read.
  tune.total_steps = 3
  tune.init_from = str(tmp_path / 'gone')
  result = train_and_evaluate(tune, tmp_path / 'tune',
                              devices=jax.devices()[:1])
  assert result['step'] == 3
  with pytest.raises(ConfigError, match='gone holds no checkpoint'):
    train_and_evaluate(tune, tmp_path / 'fresh', devices=jax.devices()[:1])


def test_a_config_mistake_leaves_no_new_workdir(tiny_config, tmp_path):
  with pytest.raises(ConfigError, match="model.name 'resnet' is unknown"):
    train_and_evaluate(tiny_config(**{'model.name': 'resnet'}),
                       tmp_path / 'new')
  assert not os.path.exists(tmp_path / 'new')
  # A workdir that was there already stays, with what it held.
  (tmp_path / 'old').mkdir()
  (tmp_path / 'old' / 'notes.txt').write_text('mine')
  with pytest.raises(ConfigError, match="model.name 'resnet' is unknown"):
    train_and_evaluate(tiny_config(**{'model.name': 'resnet'}),
                       tmp_path / 'old')
  assert os.listdir(tmp_path / 'old') == ['notes.txt']


def test_an_lm_run_writes_the_samples_its_params_draw(tiny_config, tmp_path):
  config = tiny_config(total_steps=4, eval_every=2, checkpoint_every=4,
                       task='lm')
  config.model = ml_collections.ConfigDict(
      {'name': 'gpt', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
       'mlp_dim': 32, 'max_len': 16})
  config.dataset.name = 'kjv_bible'
  config.dataset.tokenizer = 'char'
  config.dataset.max_length = 16
  train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])

  assert sorted(f for f in os.listdir(tmp_path) if f.startswith('samples')) == [
      'samples_000002.txt', 'samples_000004.txt']
  written = (tmp_path / 'samples_000004.txt').read_text()
  tokenizer = text_lib.load_tokenizer(str(tmp_path / 'tokenizer.json'))
  task = build_task(config, vocab_size=tokenizer.vocab_size)
  samples = jax.jit(task.samples)
  ids = samples(_params(tmp_path, 4),
                jax.random.fold_in(jax.random.PRNGKey(config.seed), 4))
  assert ids.shape == (4, 16) and (ids[:, 0] == text_lib.EOS_ID).all()
  expected = [tokenizer.decode(np.asarray(row)) for row in ids]
  assert written == ''.join(f'--- {i}\n{t}\n' for i, t in enumerate(expected))
  assert any(expected)  # Four empty documents would test nothing.

  # On a data x fsdp x tensor mesh the sharded params draw what the same
  # params draw on one device.
  config.mesh = ml_collections.ConfigDict({'data': 2, 'fsdp': 2, 'tensor': 2})
  config.total_steps = config.eval_every = config.checkpoint_every = 2
  train_and_evaluate(config, tmp_path / 'mesh')
  ids = samples(_params(tmp_path / 'mesh', 2),
                jax.random.fold_in(jax.random.PRNGKey(config.seed), 2))
  expected = [tokenizer.decode(np.asarray(row)) for row in ids]
  assert (tmp_path / 'mesh' / 'samples_000002.txt').read_text() == ''.join(
      f'--- {i}\n{t}\n' for i, t in enumerate(expected))
