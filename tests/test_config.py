"""Config validation and the saved copy; every shipped config is valid."""

import glob
import importlib.util
import os
import re

from absl import flags
from ml_collections import config_flags
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
  assert 'Result:' in doc and 'PENDING' not in doc


def test_missing_field(tiny_config):
  config = tiny_config()
  del config.optimizer['learning_rate']
  with pytest.raises(ConfigError, match='config has no field '
                     '`optimizer.learning_rate`'):
    validate_config(config)
  config = tiny_config()
  config.lerning_rate = 0.1  # A top-level field misspelt.
  with pytest.raises(ConfigError, match=r'config has no field\(s\) '
                     r'lerning_rate; its fields are batch_size, '):
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


def test_misspelt_optimizer_field_before_any_data(tiny_config):
  config = tiny_config()
  config.optimizer.b3 = 0.9  # A config built in Python: no absl check.
  with pytest.raises(ConfigError, match=r'optimizer has no field\(s\) b3'):
    validate_config(config)


def test_saved_config_round_trips(tiny_config, tmp_path):
  config = tiny_config()
  save_config(config, str(tmp_path))
  loaded = load_saved_config(str(tmp_path))
  assert loaded.optimizer.learning_rate == config.optimizer.learning_rate
  assert list(loaded.model.features) == [32]


def _readme_overrides():
  """The `--config.KEY=VALUE` column of the README's table of run options."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  rows = re.findall(r'^\|[^|\n]*\| `(--config\.[^|\n]*)` \|$', readme, re.M)
  return [o for row in rows for o in row.replace('`', '').split()]


def test_readme_lists_the_run_options():
  keys = {o.split('=')[0] for o in _readme_overrides()}
  assert {'--config.parallelism', '--config.microbatches',
          '--config.compute_dtype', '--config.nan_policy',
          '--config.steps_per_dispatch', '--config.model.remat'} <= keys


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_readme_run_options_parse_on_every_config(path):
  # absl overrides only fields a config has: each option the README
  # documents must be settable from the command line of every experiment.
  for override in _readme_overrides():
    key, value = override[len('--config.'):].split('=')
    if key == 'model.remat' and 'remat' not in _load(path).get_config().model:
      continue  # Transformer configs only; the README says so.
    argv = ['run', f'--config={path}', override]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file('config', flag_values=values,
                                    sys_argv=argv)
    values(argv)
    node = values.config
    for part in key.split('.'):
      node = node[part]
    assert str(node) == value, (override, node)


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_text_configs_can_switch_to_subwords_from_the_command_line(path):
  # `dataset.tokenizer=subword` needs `dataset.vocab_size`, which absl can
  # set only if the config has the field.
  dataset = _load(path).get_config().dataset
  if 'tokenizer' in dataset:
    assert 'vocab_size' in dataset
