"""The workloads as bigml_jax runs them: config -> task -> jitted train step.

Each workload is an experiment config (model, optimizer and a `synthetic`
dataset, so `train_and_evaluate` can run it too) built into the framework's
own task, optimizer and train step, jitted over a mesh exactly as
`bigml_jax.training.loop` does it.
"""

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from bigml_jax.tasks import build_task

from benchmarks.jax_harness import MESH_1, Bench, build
from benchmarks.workloads import GAN, RNN, TRANSFORMER, WORKLOADS, Workload


def model_config(w: Workload) -> ml_collections.ConfigDict:
  if w.name == 'mlp':
    return ml_collections.ConfigDict(
        {'name': 'mlp', 'features': (128,), 'dropout_rate': 0.0})
  if w.name == 'rnn':
    return ml_collections.ConfigDict(
        {'name': 'rnn_sequence', 'cell': 'rnn', 'hidden_dim': RNN['hidden']})
  if w.name == 'cnn':
    return ml_collections.ConfigDict(
        {'name': 'cnn', 'channels': (32, 64), 'dense': (128,),
         'kernel_size': (3, 3), 'dropout_rate': 0.0})
  if w.name == 'transformer':
    return ml_collections.ConfigDict(
        dict(name='bert', pooling='mean', dropout_rate=0.0, **TRANSFORMER))
  if w.name == 'gan':
    return ml_collections.ConfigDict({
        'name': 'gan',
        'generator': {'name': 'dcgan_generator', 'output_shape': w.inputs,
                      'latent_dim': GAN['latent_dim'],
                      'channels': GAN['g_channels'],
                      'kernel_size': GAN['kernel_size']},
        'discriminator': {'name': 'dcgan_discriminator',
                          'channels': GAN['d_channels'],
                          'kernel_size': GAN['kernel_size']}})
  raise ValueError(f'workload {w.name!r} has no registry model')


def optimizer_config(w: Workload) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
      dict({'schedule': 'constant', 'warmup_steps': 0, 'weight_decay': 0.0,
            'grad_clip_norm': 0.0}, **w.optimizer))


def experiment_config(w: Workload, *, total_steps: int = 100,
                      num_train: int = 4096) -> ml_collections.ConfigDict:
  """A complete config for `train_and_evaluate` on synthetic inputs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  if w.name == 'gan':
    c.task = 'gan'
  c.model = model_config(w)
  c.dataset = ml_collections.ConfigDict(
      {'name': 'synthetic', 'train_split': 'train', 'eval_split': 'test',
       'shape': w.inputs, 'num_classes': w.num_classes,
       'num_train': num_train, 'num_eval': w.batch_size})
  if w.vocab:
    c.dataset.vocab_size = w.vocab
  c.batch_size = w.batch_size
  c.total_steps = total_steps
  c.log_every = max(total_steps // 10, 1)
  # Eval and checkpoint once, after the last timed window.
  c.eval_every = total_steps
  c.checkpoint_every = total_steps
  c.max_to_keep = 1
  c.optimizer = optimizer_config(w)
  c.mesh = ml_collections.ConfigDict(MESH_1)
  return c


def make_task(w: Workload):
  config = experiment_config(w)
  fields = {'num_classes': w.num_classes}
  if w.vocab:
    fields['vocab_size'] = w.vocab
  return build_task(config, **fields)


def make_task_and_optimizer(w: Workload):
  task = make_task(w)
  tx, _ = task.make_optimizer(experiment_config(w))  # A GAN: one a network.
  return task, tx


def count_params(name: str) -> int:
  """Parameters of the framework's model for WORKLOADS[name], from shapes
  alone (nothing is computed)."""
  w = WORKLOADS[name]
  task, _ = make_task_and_optimizer(w)
  example = jax.tree.map(lambda x: x[:1], w.batch())
  params = nn.unbox(jax.eval_shape(task.init, jax.random.key(0), example))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def build_workload(name: str, *, seed: int = 0) -> Bench:
  """The framework's train step for WORKLOADS[name], on one device."""
  w = WORKLOADS[name]
  task, tx = make_task_and_optimizer(w)
  return build(task, tx, w.batch(seed), seed=seed)

