"""train_and_evaluate(config, workdir): one run, read top to bottom.

config -> mesh -> data -> task -> sharded state (restored or fresh) -> compiled
steps -> loop with logging, eval and checkpoints. Rerunning with the same
workdir resumes from its latest good checkpoint; SIGTERM/SIGINT end the run
with a checkpoint at the current step.
"""

import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from bigml_jax import checkpoint as ckpt
from bigml_jax.config import ConfigError, save_config, validate_config
from bigml_jax.data import pipeline
from bigml_jax.interop import hf
from bigml_jax.metrics import MetricWriter
from bigml_jax.optim import make_optimizer
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.tasks import build_task
from bigml_jax.training import perf
from bigml_jax.training import step as step_lib
from bigml_jax.training import state as state_lib


class Preempted(Exception):
  """Raised after a SIGTERM/SIGINT once the current step is checkpointed."""


class NonFiniteError(FloatingPointError):
  """A non-finite loss or gradient, with nan_policy='stop'."""


def _make_workdir(workdir: str) -> tuple[str, bool]:
  """(absolute path, whether this call created it); checks it is writable."""
  if '://' in str(workdir):
    # Config, metrics and image files go through the local file API, which
    # would make a local directory named after the URL.
    raise ConfigError(
        f'workdir {workdir}: URL workdirs are not supported yet; pass a '
        'directory every host sees: an NFS share, or the bucket mounted on '
        'every host (gcsfuse --implicit-dirs --rename-dir-limit=200000 '
        'BUCKET /mnt/BUCKET) and --workdir=/mnt/BUCKET/...')
  workdir = os.path.abspath(os.path.expanduser(str(workdir)))
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f'workdir {workdir} cannot be written ({e.strerror}); '
                      'pass a --workdir you can write to') from None
  return workdir, created


def _remove_empty_dirs(top: str) -> None:
  """Removes `top` and the directories under it, if they hold no file."""
  for root, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(root)  # Fails, and so keeps it, unless it is empty.
    except OSError:
      pass


def _bytes_per_device(tree: Any) -> int:
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # Every process must stop at the same step to save collectively.
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return (self.received is not None or
              multihost_utils.reached_preemption_sync_point(step))
    return self.received is not None


def _as_tuples(x):
  """Nested lists and tuples (a config's rules) as nested tuples."""
  return tuple(map(_as_tuples, x)) if isinstance(x, (list, tuple)) else x


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
    Final metrics: eval_loss, eval_accuracy (and the task's other eval
    metrics as eval_*), train_loss, step, time_to_first_step_s (from this
    call to the end of the first train step) and examples_per_sec (median
    over log windows after the first).

  Raises:
    ConfigError: for mistakes in the config or workdir (nothing is written;
      a workdir this call created is removed again).
    Preempted: after SIGTERM/SIGINT, once the current step is checkpointed.
    NonFiniteError: a non-finite loss or gradient with nan_policy='stop'.
    checkpoint.SaveError: a checkpoint could not be written (disk full).
  """
  start_time = time.time()
  validate_config(config)
  workdir, created = _make_workdir(workdir)
  try:
    return _train_and_evaluate(config, workdir, devices, start_time)
  except ConfigError:
    if created:  # A mistake found before the run wrote anything.
      _remove_empty_dirs(workdir)
    raise


def _train_and_evaluate(config, workdir, devices, start_time):
  config, hf_dir = hf.resolve_init_from(config)  # hf:DIR's architecture.
  use_pmap = config.get('parallelism', 'jit') == 'pmap'
  per_call = config.get('steps_per_dispatch', 1)
  compute_dtype = config.get('compute_dtype') or None
  microbatches = config.get('microbatches', 1)
  # Fine-tuning: a fresh run starts from another run's params, and reads
  # text with that run's tokenizer (its embedding rows are those ids). A
  # run with checkpoints of its own resumes and reads neither.
  init_from = config.get('init_from') or None
  init_workdir = None
  if (init_from and
      ckpt.latest_step(os.path.join(workdir, 'checkpoints')) is None):
    init_workdir = hf_dir or ckpt.run_checkpoints(init_from)[0]

  # Mesh
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  mesh_lib.check_batch_size(config.batch_size, mesh)
  eval_batch_size = config.get('eval_batch_size') or config.batch_size
  mesh_lib.check_batch_size(eval_batch_size, mesh)
  if config.batch_size % (microbatches * mesh_lib.data_parallel_size(mesh)):
    raise ConfigError(
        f'batch_size {config.batch_size} does not split into {microbatches} '
        f'microbatches on {mesh_lib.data_parallel_size(mesh)} data-parallel '
        'devices; use a multiple of '
        f'{microbatches * mesh_lib.data_parallel_size(mesh)}')
  if use_pmap and (mesh.shape['fsdp'] > 1 or mesh.shape['tensor'] > 1):
    raise ConfigError('parallelism=pmap is data parallel only; set '
                      'mesh.fsdp=1 and mesh.tensor=1 (or use parallelism=jit)')
  rules = tuple(config.get('logical_axis_rules') or mesh_lib.DEFAULT_RULES)
  if (_as_tuples(rules) != _as_tuples(mesh_lib.DEFAULT_RULES) and
      mesh.shape['fsdp'] > 1 and mesh.shape['tensor'] > 1):
    logging.warning(
        'custom logical_axis_rules on a mesh with fsdp and tensor > 1: XLA '
        'computes wrong gradients where an activation must be resharded '
        'between them (README, Known limits); compare a few steps against '
        'fsdp or tensor alone')

  # Data
  sources = pipeline.load_sources(config.dataset, workdir,
                                  init_from=init_workdir)
  preprocess = pipeline.make_preprocess(config.dataset)
  train_iter = pipeline.train_iterator(
      sources.train, preprocess, seed=config.seed,
      global_batch_size=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())

  # Task and optimizer
  task = build_task(config, **sources.fields)
  # A task with several networks (a GAN) builds its own optimizer state.
  tx, schedule = (task.make_optimizer(config) if hasattr(task, 'make_optimizer')
                  else make_optimizer(config.optimizer, config.total_steps))

  example = jax.tree.map(lambda x: x[None], preprocess(sources.train[0]))
  init_fn, abstract, shardings = state_lib.sharded_init(task, tx, example,
                                                        mesh, rules)
  rng = jax.random.PRNGKey(config.seed)

  # Load checkpoint, or init
  manager = ckpt.make_manager(os.path.join(workdir, 'checkpoints'),
                              config.max_to_keep)
  writer = None
  try:
    target = ckpt.abstract_with_shardings(abstract, shardings)
    restored = ckpt.restore_latest(manager, target)
    if restored is None:
      state = init_fn(rng)
      if init_from:  # Also when every own checkpoint proved unreadable.
        load = hf.load_params if hf_dir else ckpt.load_params
        params, report = load(init_from, state.params,
                              config.get('init_skip'))
        state = state.replace(params=params)
        logging.info('init_from %s: loaded %d parameters; kept as initialised '
                     '(init_skip): %s; in the checkpoint, not used: %s',
                     init_from, len(report['loaded']),
                     ', '.join(report['skipped']) or 'none',
                     ', '.join(report['unused']) or 'none')
    else:
      state, data_state, _ = restored
      train_iter.set_state(data_state)
      if init_from:
        logging.info('init_from %s is not read: the run resumes', init_from)
      logging.info('resumed from %s at step %d', manager.directory,
                   int(state.step))
    start_step = int(state.step)
    if start_step % per_call:
      raise ConfigError(
          f'the checkpoint in {manager.directory} is at step {start_step}, '
          f'not a multiple of steps_per_dispatch {per_call}; resume with '
          'steps_per_dispatch=1 (or one that divides it)')
    if multihost.is_primary():  # Past the config's checks: the run starts.
      save_config(config, workdir)
      pipeline.save_tokenizer(sources, workdir)

    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    logging.info('mesh %s (%s); %d parameters; per device: params %.2f MB, '
                 'optimizer state %.2f MB', dict(mesh.shape),
                 'pmap' if use_pmap else 'jit', num_params,
                 _bytes_per_device(state.params) / 1e6,
                 _bytes_per_device(state.opt_state) / 1e6)

    # Compile steps
    if hasattr(task, 'make_train_step'):
      step_fn = task.make_train_step(tx)
    else:
      step_fn = step_lib.make_train_step(
          task, tx, microbatches=microbatches, compute_dtype=compute_dtype,
          axis_name=step_lib.PMAP_AXIS if use_pmap else None)
    eval_step = step_lib.jit_eval_step(
        step_lib.make_eval_step(task, compute_dtype=compute_dtype),
        shardings.params, mesh)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    read = ((lambda: next(train_iter)) if per_call == 1 else
            (lambda: pipeline.next_stacked(train_iter, per_call)))
    first_batch = read()
    # The step adds its metrics to running sums it is given (one dispatch a
    # step); each log window starts from fresh sums, shaped by an abstract
    # step. Jitted, the step is traced once for both (on the jit path).
    step_fn = jax.jit(step_fn)
    if use_pmap:
      local = list(mesh.local_devices)
      state = jax.tree.map(
          lambda x: np.broadcast_to(np.asarray(x), (len(local),) + x.shape),
          state)
      to_device = lambda b: jax.tree.map(
          lambda x: x.reshape(len(local), -1, *x.shape[1:]), b)
      first_batch = to_device(first_batch)
      train_step = jax.pmap(step_lib.summing_metrics(step_fn),
                            axis_name=step_lib.PMAP_AXIS, donate_argnums=(0, 1),
                            devices=local)
      metric_shapes = jax.eval_shape(
          jax.vmap(step_fn, axis_name=step_lib.PMAP_AXIS), state,
          first_batch)[1]
      no_sums = jax.device_get(step_lib.no_metrics(metric_shapes))
      new_sums = lambda: no_sums  # pmap copies it to each device per call.
      unreplicate = lambda tree: jax.tree.map(lambda x: x[0], tree)
    else:
      train_step = step_lib.jit_summing_step(step_fn, shardings, mesh,
                                             per_call)
      input_sharding = mesh_lib.batch_sharding(mesh, per_call)
      to_device = lambda b: multihost.jit_batch(b, input_sharding)
      first_batch = to_device(first_batch)
      one_step = first_batch if per_call == 1 else jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), first_batch)
      metric_shapes = jax.eval_shape(step_fn, state, one_step)[1]
      new_sums = jax.jit(lambda: step_lib.no_metrics(metric_shapes),
                         out_shardings=mesh_lib.replicated(mesh))
      unreplicate = lambda tree: tree
    # Tasks that generate (a GAN, an LM) show samples at every eval.
    sample_fn = (jax.jit(task.samples, out_shardings=mesh_lib.replicated(mesh))
                 if getattr(task, 'num_samples', 0) > 0 else None)

    def write_samples(step):
      samples = np.asarray(sample_fn(host_state().params,
                                     jax.random.fold_in(rng, step)))
      if sources.tokenizer is None:
        writer.write_images(step, 'samples', samples)
      else:
        writer.write_texts(step, 'samples',
                           [sources.tokenizer.decode(s) for s in samples])

    def host_state():
      """The state as jit/Orbax see it (pmap keeps one copy per device)."""
      return jax.device_put(unreplicate(state), shardings) if use_pmap else state

    # XLA:CPU over several host devices deadlocks in a collective when
    # ~100 train steps are in flight (jax 0.10.2: a rendezvous that never
    # fills, then an abort). Waiting every few calls bounds the queue, for
    # eval batches too (45 in flight were fine); one device, GPUs and TPUs
    # never wait.
    drain_every = (8 if jax.default_backend() == 'cpu' and
                   len(mesh.local_devices) > 1 else 0)

    def evaluate(params) -> dict[str, float]:
      sums = None
      for i, local_batch in enumerate(pipeline.eval_batches(
          sources.eval, preprocess, global_batch_size=eval_batch_size,
          process_index=jax.process_index(), process_count=jax.process_count())):
        m = eval_step(params, multihost.jit_batch(local_batch, batch_sharding))
        sums = m if sums is None else step_lib.add_metrics(sums, m)
        if drain_every and (i + 1) % drain_every == 0:
          jax.block_until_ready(sums)
      return task.summarize(jax.device_get(sums))

    def save(step):
      ckpt.save(manager, step, host_state(), train_iter.get_state(),
                {'step': step, 'model': config.model.get('name', '')})

    # Train loop. Metrics of a log step are fetched only after the next step is
    # dispatched, so the device never idles waiting for the host.
    sums = new_sums()
    flops = None
    if not use_pmap:  # Compile ahead to show memory use before the first step.
      train_step, flops = perf.compile_and_report(train_step, state, sums,
                                                  first_batch)
      if per_call > 1:  # XLA's cost analysis counts a loop's body once.
        flops = None
    peak = perf.peak_flops_per_device(mesh.devices.flat[0])
    writer = MetricWriter(workdir, enabled=multihost.is_primary(),
                          total_steps=config.total_steps,
                          initial_step=start_step)
    result = {'step': start_step}
    rates: list[float] = []
    pending = final = None
    last_log = (start_step, time.time())

    def flush(pending):
      nonlocal last_log
      log_step, log_sums = pending
      values = jax.device_get(log_sums)
      if values.get('nonfinite', 0) > 0:
        bad = int(values['min_nonfinite_step'])
        if config.get('nan_policy', 'stop') == 'stop':
          raise NonFiniteError(
              f'non-finite loss or gradient at step {bad}; the update was not '
              'applied and no non-finite state was saved. Lower the learning '
              'rate, clip gradients, or set nan_policy=skip')
        logging.warning('skipped %d non-finite update(s), first at step %d',
                        int(values['nonfinite']), bad)
      now = time.time()
      steps = log_step - last_log[0]
      seconds = max(now - last_log[1], 1e-9)
      rate = steps / seconds
      if last_log[0] == start_step:
        result['time_to_first_step_s'] = now - start_time
      else:
        rates.append(rate * config.batch_size)
      last_log = (log_step, now)
      train = task.summarize(values)
      train['grad_norm'] = values['grad_norm_sum'] / max(values['steps'], 1.0)
      result['train_loss'] = float(train['loss'])
      train.update(perf.throughput(rate, config.batch_size, mesh.devices.size,
                                   flops, peak))
      if getattr(task, 'counts', None) == 'tokens':
        train['tokens_per_sec'] = values['count'] / seconds
        train['tokens_per_sec_per_device'] = train['tokens_per_sec'] / mesh.devices.size
      writer.write(log_step, 'train', dict(
          train, learning_rate=float(schedule(log_step - 1))))

    with _StopSignal() as stop:
      # `step` is the last step of each call (per_call steps a call).
      for step in range(start_step + per_call, config.total_steps + 1,
                        per_call):
        batch = (first_batch if step == start_step + per_call else
                 to_device(read()))
        state, sums = train_step(state, sums, batch)
        if drain_every and (step // per_call) % drain_every == 0:
          jax.block_until_ready(sums)
        if pending is not None:
          flush(pending)
          pending = None
        is_last = step == config.total_steps
        if (step % config.log_every == 0 or step == start_step + per_call or
            is_last):
          pending, sums = (step, unreplicate(sums)), new_sums()
        writer.advance(step)
        boundary = (step % config.eval_every == 0 or
                    step % config.checkpoint_every == 0 or is_last)
        preempted = stop.should_stop(step)
        if (boundary or preempted) and pending is not None:
          # Checked before any save: a non-finite run stops here, unsaved.
          flush(pending)
          pending = None
        if step % config.eval_every == 0 or is_last:
          final = evaluate(host_state().params)
          writer.write(step, 'eval', final)
          if sample_fn is not None:
            write_samples(step)
        if step % config.checkpoint_every == 0 or is_last or preempted:
          save(step)
        if preempted:
          ckpt.wait(manager)
          raise Preempted(
              f'stopped by {stop.received or "preemption"} at step {step}; '
              'checkpoint saved, rerun the same command to resume')
    if pending is not None:
      flush(pending)

    if final is None:
      logging.info('workdir already holds the final step %d', start_step)
      final = evaluate(host_state().params)
    ckpt.close(manager)
    writer.close()
    result['step'] = int(unreplicate(state).step)
    result.update({f'eval_{k}': float(v) for k, v in final.items()})
    if rates:
      result['examples_per_sec'] = float(np.median(rates))
    return result
  except BaseException:
    # Stop the checkpoint and writer threads, which would otherwise keep
    # the process alive or files open in a caller; a failure here (a full
    # disk again) is logged so the first error is the one raised.
    cleanups = [lambda: ckpt.close(manager, after_error=True)]
    if writer is not None:
      cleanups.append(writer.close)
    for cleanup in cleanups:
      try:
        cleanup()
      except Exception:  # pylint: disable=broad-except
        logging.exception('while cleaning up after the error below')
    raise
