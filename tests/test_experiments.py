"""Every model-zoo experiment trains: a few steps of each shipped config (on
short sequences) make the training loss go down."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from bigml_jax import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ['rnn_fortunes.py:rnn', 'rnn_fortunes.py:lstm', 'rnn_fortunes.py:gru',
           'bert_fortunes.py', 'bert_mlm_fortunes.py', 'gpt_kjv.py',
           'vit_digits.py',
           'conv_attention_digits.py']


def _config(name):
  path, *arg = name.split(':')
  spec = importlib.util.spec_from_file_location(
      'cfg', os.path.join(ROOT, 'experiments/configs', path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*arg)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains(name, tmp_path, data_dir):
  config = _config(name)
  config.dataset.data_dir = data_dir
  config.total_steps, config.log_every = 30, 1
  config.eval_every = config.checkpoint_every = 30
  config.optimizer.warmup_steps = 0
  config.optimizer.schedule = 'constant'
  if 'max_length' in config.dataset:
    config.dataset.max_length = 32
  if 'max_len' in config.model:
    config.model.max_len = 32
  # One device: sharding is tested elsewhere, and 8 fake devices on 2 busy
  # cores make XLA's CPU collectives slow for long evals.
  result = train_and_evaluate(config, tmp_path, devices=jax.devices()[:1])
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  losses = [r['loss'] for r in rows if r['split'] == 'train']
  assert len(losses) == 30 and np.isfinite(result['eval_loss'])
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


def test_readme_library_example_trains(tmp_path):
  """The README's own-module example, as written, on the tests' 8 devices."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  section = readme[readme.index('## Using the library'):
                   readme.index('## Scaling')]
  code = [b for b in re.findall(r'```python\n(.*?)```', section, re.S)
          if 'sharded_init' in b][0]
  proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Adam memorises one fixed batch of 64: the loss falls from ~2.3.
  assert float(proc.stdout.strip().splitlines()[-1]) < 0.5
