"""train_and_evaluate(config, workdir): one run, read top to bottom.

config -> mesh -> data -> task -> sharded state (restored or fresh) -> jitted
steps -> loop with logging, eval and checkpoints. Rerunning with the same
workdir resumes from its latest checkpoint.
"""

import os
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigml_jax import checkpoint as ckpt
from bigml_jax.config import ConfigError, save_config, validate_config
from bigml_jax.data import pipeline
from bigml_jax.metrics import MetricWriter
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.tasks import build_task
from bigml_jax.training import step as step_lib
from bigml_jax.training.optim import make_optimizer
from bigml_jax.training.state import TrainState


def _make_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f'workdir {workdir} cannot be written ({e.strerror}); '
                      'pass a --workdir you can write to') from None
  return workdir


def _bytes_per_device(tree: Any) -> int:
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None
                       ) -> dict[str, float]:
  """Trains and evaluates the experiment `config`, writing into `workdir`.

  Args:
    config: an experiment config (see experiments/configs/).
    workdir: receives config.json, metrics.jsonl, TensorBoard events and
      checkpoints/; if it already holds a checkpoint the run resumes from it.
    devices: devices to build the mesh over (default: all of them).

  Returns:
    Final metrics: eval_loss, eval_accuracy, train_loss, step,
    time_to_first_step_s (from this call to the end of the first train step)
    and examples_per_sec (median over log windows after the first).
  """
  start_time = time.time()
  validate_config(config)
  workdir = _make_workdir(workdir)

  # Mesh
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  rules = tuple(config.get('logical_axis_rules') or mesh_lib.DEFAULT_RULES)

  # Data
  sources = pipeline.load_sources(config.dataset)
  preprocess = pipeline.make_preprocess(config.dataset)
  train_iter = pipeline.train_iterator(
      sources.train, preprocess, seed=config.seed,
      global_batch_size=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())

  # Task and optimizer
  task = build_task(config, num_classes=sources.num_classes)
  # A task with several networks (a GAN) builds its own optimizer state.
  tx, schedule = (task.make_optimizer(config) if hasattr(task, 'make_optimizer')
                  else make_optimizer(config.optimizer, config.total_steps))

  # Sharded state: shapes first, then shardings from the logical names, then
  # init compiled to write each parameter straight into its shards.
  example = jax.tree.map(lambda x: x[None], preprocess(sources.train[0]))

  def init_state(rng):
    param_rng, step_rng = jax.random.split(rng)
    params = task.init(param_rng, example)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=step_rng)

  rng = jax.random.PRNGKey(config.seed)
  abstract = jax.eval_shape(init_state, rng)
  shardings = mesh_lib.logical_shardings(abstract, mesh, rules)
  init_fn = jax.jit(lambda r: nn.unbox(init_state(r)), out_shardings=shardings)

  # Load checkpoint, or init
  manager = ckpt.make_manager(os.path.join(workdir, 'checkpoints'),
                              config.max_to_keep)
  latest = manager.latest_step()
  if latest is None:
    state = init_fn(rng)
  else:
    target = ckpt.abstract_with_shardings(nn.unbox(abstract), shardings)
    state, data_state, _ = ckpt.restore(manager, latest, target)
    train_iter.set_state(data_state)
    logging.info('resumed from %s at step %d', manager.directory, latest)
  if multihost.is_primary():
    save_config(config, workdir)
  start_step = int(state.step)

  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('mesh %s; %d parameters; per device: params %.2f MB, '
               'optimizer state %.2f MB', dict(mesh.shape), num_params,
               _bytes_per_device(state.params) / 1e6,
               _bytes_per_device(state.opt_state) / 1e6)

  # Compile steps
  make_step = getattr(task, 'make_train_step', None)
  train_step = step_lib.jit_train_step(
      make_step(tx) if make_step else step_lib.make_train_step(task, tx),
      shardings, mesh)
  eval_step = step_lib.jit_eval_step(
      step_lib.make_eval_step(task), shardings.params, mesh)
  batch_sharding = mesh_lib.batch_sharding(mesh)
  # Tasks that generate (a GAN) show samples at every eval.
  sample_fn = (jax.jit(task.samples, out_shardings=mesh_lib.replicated(mesh))
               if hasattr(task, 'samples') else None)

  def evaluate(params) -> dict[str, float]:
    sums = None
    for local in pipeline.eval_batches(
        sources.eval, preprocess, global_batch_size=config.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count()):
      m = eval_step(params, multihost.global_batch(local, batch_sharding))
      sums = m if sums is None else step_lib.add_metrics(sums, m)
    return task.summarize(jax.device_get(sums))

  # Train loop. Metrics of a log step are fetched only after the next step is
  # dispatched, so the device never idles waiting for the host.
  writer = MetricWriter(workdir, enabled=multihost.is_primary(),
                        total_steps=config.total_steps,
                        initial_step=start_step)
  result = {'step': start_step}
  rates: list[float] = []
  sums = pending = final = None
  last_log = (start_step, time.time())

  def flush(pending):
    nonlocal last_log
    log_step, log_sums = pending
    values = jax.device_get(log_sums)
    now = time.time()
    steps = log_step - last_log[0]
    rate = steps / max(now - last_log[1], 1e-9)
    if last_log[0] == start_step:
      result['time_to_first_step_s'] = now - start_time
    else:
      rates.append(rate * config.batch_size)
    last_log = (log_step, now)
    train = task.summarize(values)
    train['grad_norm'] = values['grad_norm_sum'] / values['steps']
    result['train_loss'] = train['loss']
    writer.write(log_step, 'train', dict(
        train, learning_rate=float(schedule(log_step - 1)), steps_per_sec=rate,
        examples_per_sec=rate * config.batch_size))

  for step in range(start_step + 1, config.total_steps + 1):
    batch = multihost.global_batch(next(train_iter), batch_sharding)
    state, metrics = train_step(state, batch)
    sums = metrics if sums is None else step_lib.add_metrics(sums, metrics)
    if pending is not None:
      flush(pending)
      pending = None
    is_last = step == config.total_steps
    if step % config.log_every == 0 or step == start_step + 1 or is_last:
      pending, sums = (step, sums), None
    writer.advance(step)
    if step % config.eval_every == 0 or is_last:
      if pending is not None:
        flush(pending)
        pending = None
      final = evaluate(state.params)
      writer.write(step, 'eval', final)
      if sample_fn is not None:
        writer.write_images(step, 'samples', np.asarray(sample_fn(
            state.params, jax.random.fold_in(state.rng, step))))
    if step % config.checkpoint_every == 0 or is_last:
      ckpt.save(manager, step, state, train_iter.get_state(),
                {'step': step, 'model': config.model.name})
  if pending is not None:
    flush(pending)

  if final is None:
    logging.info('workdir already holds the final step %d', start_step)
    final = evaluate(state.params)
  manager.wait_until_finished()
  manager.close()
  writer.close()
  result.update(step=int(state.step), eval_loss=final['loss'],
                eval_accuracy=final['accuracy'])
  if rates:
    result['examples_per_sec'] = float(np.median(rates))
  return result
