"""Refactoring changes no number: the first 50 training losses of every
shipped config, on one device and on a 2x2x2 (data, fsdp, tensor) mesh, are
bit-equal to those pinned in pinned_losses.json.

Sequences are shortened to 32 tokens and warmup to at most the 50 steps (so
the run is short); every other field is the config's own. The run is the
loop's (`build_run`, its train iterator, `make_trainer`, a row's loss from
the task's `summarize`), without what does not touch the train losses:
evaluation, samples, checkpoints (the loop's own tests cover those). To pin
anew (only for a change meant to alter the numbers, said so in its commit):

  python -m tests.training.test_pinned_losses --write
"""

import importlib.util
import json
import os
import sys
import tempfile

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'pinned_losses.json')
CONFIGS = ['default.py', 'digits_mlp.py', 'conv_attention_digits.py',
           'vit_digits.py', 'rnn_fortunes.py:rnn', 'rnn_fortunes.py:lstm',
           'rnn_fortunes.py:gru', 'bert_fortunes.py', 'bert_mlm_fortunes.py',
           'gpt_kjv.py', 'gan_ring.py', 'gan_digits.py', 'bag_fortunes.py']
MESHES = {'1 device': None, '2x2x2': {'data': 2, 'fsdp': 2, 'tensor': 2}}
STEPS = 50


def shipped_config(name):
  path, *arg = name.split(':')
  spec = importlib.util.spec_from_file_location(
      'cfg', os.path.join(ROOT, 'experiments/configs', path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*arg)


def losses(name, mesh, data_dir, root) -> list[float]:
  # pylint: disable=g-import-not-at-top
  from bigml_jax import checkpoint as ckpt
  from bigml_jax.training.run import build_run
  from bigml_jax.training.trainer import make_trainer
  config = shipped_config(name)
  config.dataset.data_dir = data_dir
  config.total_steps = STEPS
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, STEPS)
  if 'max_length' in config.dataset:
    config.dataset.max_length = 32
  if 'max_len' in config.model:
    config.model.max_len = 32
  if 'gan' in config and 'classifier_workdir' in config.gan:
    config.gan.quality = 'none'  # Its classifier scores samples only.
  devices = jax.devices()[:1] if mesh is None else None
  if mesh is not None:
    config.mesh.update(mesh)
  run = build_run(config, tempfile.mkdtemp(dir=root), devices=devices)
  assert run.config.steps_per_dispatch == 1, name  # A row is one step.
  try:
    batches = run.train_iterator()
    trainer = make_trainer(run, next(batches))
    got = []
    for i in range(STEPS):
      trainer.step(trainer.first_batch if i == 0 else
                   trainer.to_device(next(batches)))
      sums = jax.device_get(trainer.take_sums())
      got.append(float(run.task.summarize(sums)['loss']))
    return got
  finally:
    ckpt.close(run.manager)


@pytest.fixture(scope='module')
def pinned():
  with open(PINNED) as f:
    return json.load(f)


@pytest.mark.parametrize('mesh', MESHES)
@pytest.mark.parametrize('name', CONFIGS)
def test_losses_are_pinned(name, mesh, pinned, data_dir, tmp_path_factory):
  got = losses(name, MESHES[mesh], data_dir,
               str(tmp_path_factory.getbasetemp()))
  want = pinned[name][mesh]
  assert len(got) == STEPS
  assert got == want, (np.array(got) - np.array(want)).tolist()
  assert np.mean(got[-5:]) < np.mean(got[:5]), got  # It trains.


if __name__ == '__main__':
  # The tests' environment (XLA flags, devices): the pins are its numbers.
  from tests import conftest  # pylint: disable=g-import-not-at-top,unused-import
  assert sys.argv[1:] == ['--write'], __doc__
  root = tempfile.mkdtemp(prefix='pinned_')
  data_dir = os.path.join(root, 'tfds')
  table = {name: {mesh: losses(name, MESHES[mesh], data_dir, root)
                  for mesh in MESHES} for name in CONFIGS}
  with open(PINNED, 'w') as f:
    json.dump(table, f, indent=1)
  print(f'pinned {len(CONFIGS)} configs x {len(MESHES)} meshes in {PINNED}')
