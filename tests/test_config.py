"""Config validation and the saved copy; every shipped config is valid."""

import glob
import importlib.util
import os

import pytest

from bigml_jax import ConfigError, validate_config
from bigml_jax.config import load_saved_config, save_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'experiments/configs/[!_]*.py')))


def _load(path):
  spec = importlib.util.spec_from_file_location('cfg', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_shipped_configs_validate_and_document_themselves(path):
  module = _load(path)
  validate_config(module.get_config())
  doc = module.__doc__
  assert f'--config=experiments/configs/{os.path.basename(path)}' in doc
  assert 'Result:' in doc and 'PLACEHOLDER' not in doc


def test_missing_field(tiny_config):
  config = tiny_config()
  del config.optimizer['grad_clip_norm']
  with pytest.raises(ConfigError, match='config has no field '
                     '`optimizer.grad_clip_norm`'):
    validate_config(config)


@pytest.mark.parametrize('field,value,message', [
    ('total_steps', 0, 'total_steps must be a positive integer, got 0'),
    ('optimizer.schedule', 'step', "optimizer.schedule 'step' is unknown"),
    ('seed', 2**32, r'seed must be an integer in \[0, 2\*\*32\), got '
     '4294967296'),
    ('seed', -1, r'seed must be an integer in \[0, 2\*\*32\), got -1'),
    ('optimizer.warmup_steps', 50, r'warmup_steps 50 must be in \[0, '
     r'total_steps=20\]'),
])
def test_bad_values(tiny_config, field, value, message):
  with pytest.raises(ConfigError, match=message):
    validate_config(tiny_config(**{field: value}))


def test_saved_config_round_trips(tiny_config, tmp_path):
  config = tiny_config()
  save_config(config, str(tmp_path))
  loaded = load_saved_config(str(tmp_path))
  assert loaded.optimizer.learning_rate == config.optimizer.learning_rate
  assert list(loaded.model.features) == [32]

