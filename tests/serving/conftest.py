"""Trained runs and their exports, shared by the serving tests: a CNN on
digits and a GPT on the King James Bible, 10 steps each on one device."""

import jax
import ml_collections
import pytest

from bigml_jax import train_and_evaluate
from experiments.export import export_workdir

CNN = {'name': 'cnn', 'channels': (8,), 'dense': (16,)}
GPT = {'name': 'gpt', 'num_layers': 1, 'd_model': 16, 'num_heads': 2,
       'mlp_dim': 32, 'max_len': 24}
MAX_NEW_TOKENS = 8


def _train(workdir, data_dir, **fields):
  config = ml_collections.ConfigDict({
      'seed': 0, 'batch_size': 32, 'total_steps': 10, 'log_every': 10,
      'eval_every': 10, 'checkpoint_every': 10, 'max_to_keep': 1,
      'optimizer': {'name': 'adam', 'learning_rate': 3e-3,
                    'schedule': 'constant', 'warmup_steps': 0,
                    'weight_decay': 0.0, 'grad_clip_norm': 0.0},
      'mesh': {'data': 1, 'fsdp': 1, 'tensor': 1}, **fields})
  train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return str(workdir)


@pytest.fixture(scope='session')
def cnn_run(tmp_path_factory, data_dir):
  return _train(tmp_path_factory.mktemp('cnn_run'), data_dir, model=CNN,
                dataset={'name': 'digits', 'train_split': 'train',
                         'eval_split': 'test', 'data_dir': data_dir})


@pytest.fixture(scope='session')
def gpt_run(tmp_path_factory, data_dir):
  return _train(tmp_path_factory.mktemp('gpt_run'), data_dir, task='lm',
                model=GPT, sampling={'num_samples': 0},
                dataset={'name': 'kjv_bible', 'train_split': 'train',
                         'eval_split': 'test', 'data_dir': data_dir,
                         'tokenizer': 'char', 'max_length': 16})


@pytest.fixture(scope='session')
def cnn_export(cnn_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('exports') / 'cnn')
  export_workdir(cnn_run, out)
  return out


@pytest.fixture(scope='session')
def gpt_export(gpt_run, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('exports') / 'gpt')
  export_workdir(gpt_run, out, max_new_tokens=MAX_NEW_TOKENS)
  return out
