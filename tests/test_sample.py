"""`python -m experiments.sample`: text from a trained LM's workdir."""

import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bigml_jax import ConfigError, build_model, train_and_evaluate
from bigml_jax.data import text as text_lib
from experiments.sample import sample_texts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = {'name': 'gpt', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
         'mlp_dim': 32, 'max_len': 24}


@pytest.fixture(scope='module')
def lm_workdir(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('lm')
  config = ml_collections.ConfigDict({
      'seed': 0, 'task': 'lm', 'model': MODEL,
      'dataset': {'name': 'kjv_bible', 'train_split': 'train',
                  'eval_split': 'test', 'data_dir': data_dir,
                  'tokenizer': 'char', 'max_length': 16},
      'batch_size': 8, 'total_steps': 10, 'log_every': 10, 'eval_every': 10,
      'checkpoint_every': 10, 'max_to_keep': 1,
      'optimizer': {'name': 'adam', 'learning_rate': 3e-3,
                    'schedule': 'constant', 'warmup_steps': 0,
                    'weight_decay': 0.0, 'grad_clip_norm': 0.0},
      'mesh': {'data': 1, 'fsdp': 1, 'tensor': 1},
      'sampling': {'num_samples': 0}})
  train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return str(workdir)


def _greedy_by_hand(workdir, prompt, num_tokens):
  """Greedy decoding written out: one full model call per token, no cache
  (the window padded to max_len: the model is causal, so what follows a
  position does not change its logits; one compiled shape)."""
  tokenizer = text_lib.load_tokenizer(os.path.join(workdir, 'tokenizer.json'))
  params = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', '10', 'state'))['params']
  model = build_model(MODEL, vocab_size=tokenizer.vocab_size)
  apply = jax.jit(lambda p, tokens: model.apply({'params': p}, tokens))
  ids = [text_lib.EOS_ID] + tokenizer.encode(prompt).tolist()
  for _ in range(num_tokens):
    window = np.zeros((1, MODEL['max_len']), np.int32)
    window[0, :len(ids)] = ids
    logits = apply(params, window)
    ids.append(int(logits[0, len(ids) - 1].argmax()))
    if ids[-1] == text_lib.EOS_ID:
      break
  return tokenizer.decode(np.array(ids))


def test_greedy_samples_continue_the_prompt_as_the_model_says(lm_workdir):
  texts = sample_texts(lm_workdir, 'And God', num_samples=2, temperature=0.0)
  # 16-token training windows: EOS + 7 prompt characters + 8 new ones.
  assert texts == [_greedy_by_hand(lm_workdir, 'And God', 8)] * 2
  assert texts[0].startswith('And God')
  drawn = sample_texts(lm_workdir, 'And God', num_samples=8, num_tokens=16,
                       seed=1)
  assert all(t.startswith('And God') for t in drawn) and len(set(drawn)) > 1


def test_the_cli_prints_each_sample(lm_workdir):
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sample', f'--workdir={lm_workdir}',
       '--prompt=In the', '--temperature=0', '--num_samples=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = _greedy_by_hand(lm_workdir, 'In the', 9)
  assert proc.stdout == f'--- 0\n{text}\n--- 1\n{text}\n'


@pytest.mark.parametrize('kwargs, message', [
    (dict(prompt='x' * 30), r"the prompt is 30 tokens and --num_tokens must "
     r"be 1 to 0: the model's max_len is 24, EOS first"),
    (dict(prompt='And', num_tokens=0), 'the prompt is 3 tokens and '
     '--num_tokens must be 1 to 20'),
    (dict(prompt='J\u00e9sus'), r"characters the model never saw in training "
     r"\('\u00e9'\); leave them out"),
    (dict(step=7), r'--step .*checkpoints/7 is not a finished checkpoint; '
     r'.*checkpoints has steps 10$'),
    (dict(num_samples=0), r'--num_samples must be >= 1, --temperature and '
     r'--top_k >= 0 and --top_p in \(0, 1\] \(got 0, 1.0, 0, 1.0\)'),
    (dict(temperature=-1.0), r'\(got 4, -1.0, 0, 1.0\)'),
    (dict(top_p=0.0), r'\(got 4, 1.0, 0, 0.0\)'),
])
def test_mistakes_fail_in_one_line(lm_workdir, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    sample_texts(lm_workdir, **kwargs)


def test_workdirs_that_cannot_sample(lm_workdir, tmp_path):
  with pytest.raises(ConfigError, match='holds no config.json'):
    sample_texts(str(tmp_path))
  no_text = tmp_path / 'no_text'
  os.makedirs(no_text / 'checkpoints')
  os.symlink(os.path.join(lm_workdir, 'checkpoints', '10'),
             no_text / 'checkpoints' / '10')
  (no_text / 'config.json').write_text(
      open(os.path.join(lm_workdir, 'config.json')).read())
  with pytest.raises(ConfigError, match='holds no tokenizer.json; pass the '
                     'workdir of a run on a text dataset'):
    sample_texts(str(no_text))
  (tmp_path / 'config.json').write_text('{"task": "classification"}')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sample', f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
      f"error: {tmp_path} is a classification run; sampling needs a language "
      "model's (task='lm')")
