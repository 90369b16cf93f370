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
from bigml_jax import workdir as workdir_lib
from bigml_jax.config import (ConfigError, check_resume, save_config,
                              validate_config)
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


def _bytes_per_device(tree: Any) -> int:
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))


class _StopSignal:
  """Turns SIGTERM/SIGINT into a stop at a step every process agrees on.

  One process: a flag the loop checks between steps. Several: JAX's
  preemption service keeps its own SIGTERM handler, which tells every
  process to stop at the same step (`reached_preemption_sync_point`); a
  Python SIGTERM handler would replace it, and the processes would split
  between the collective save and the next step, and hang. SIGINT is sent
  on to it as a SIGTERM.
  """

  def __init__(self):
    self.received = None
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    signals = (signal.SIGINT,) if self._multi else (signal.SIGTERM,
                                                    signal.SIGINT)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name
    if self._multi:
      os.kill(os.getpid(), signal.SIGTERM)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`: every process calls this at every
    step, with the same steps."""
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received is not None

  def interrupts_now(self) -> bool:
    """Whether to cut work short that is not collective (one process)."""
    return not self._multi and self.received is not None

  def preempted(self, step: int) -> 'Preempted':
    return Preempted(f'stopped by {self.received or "preemption"} at step '
                     f'{step}; checkpoint saved, rerun the same command to '
                     'resume')


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
  with _StopSignal() as stop:
    workdir, created = workdir_lib.make(workdir, jax.process_index())
    lock = workdir_lib.Lock(workdir)
    try:
      if multihost.is_primary():
        lock.acquire()
      reached = ckpt.latest_step(os.path.join(workdir, 'checkpoints'))
      if reached is not None:
        check_resume(config, workdir, reached)
      return _train_and_evaluate(config, workdir, devices, start_time, stop)
    except ConfigError:
      lock.release()
      if created:  # A mistake found before the run wrote anything.
        workdir_lib.remove_empty_dirs(workdir)
      raise
    finally:
      lock.release()


def _train_and_evaluate(config, workdir, devices, start_time, stop):
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
  tokenizers = [(os.path.join(workdir, pipeline.TOKENIZER_FILE),
                 ' or use a new workdir')]
  if init_workdir:
    tokenizers.append((os.path.join(init_workdir, pipeline.TOKENIZER_FILE),
                       ", the init_from run's"))
  # Process 0 prepares a dataset missing from data_dir before the others
  # read it: on a shared data_dir they would race to write it.
  with multihost.primary_first('data prepared'):
    sources = pipeline.load_sources(
        config.dataset,
        tokenizer=pipeline.resolve_tokenizer(config.dataset, tokenizers))
  preprocess = pipeline.make_preprocess(config.dataset, sources.train)
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
      save_config(config, workdir, start_step)
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

    def evaluate(params) -> dict[str, float] | None:
      """Eval metrics, or None if a stop signal cut it short (one process:
      the checkpoint comes first)."""
      sums = None
      for i, local_batch in enumerate(pipeline.eval_batches(
          sources.eval, preprocess, global_batch_size=eval_batch_size,
          process_index=jax.process_index(), process_count=jax.process_count())):
        if stop.interrupts_now():
          return None
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

    if stop.interrupts_now():
      raise Preempted(f'stopped by {stop.received} before the first step; '
                      'nothing new to save, rerun the same command to '
                      + ('resume' if start_step else 'start'))
    # `step` is the last step of each call (per_call steps a call).
    for step in range(start_step + per_call, config.total_steps + 1,
                      per_call):
      first = step == start_step + per_call
      batch = first_batch if first else to_device(read())
      state, sums = train_step(state, sums, batch)
      if drain_every and (step // per_call) % drain_every == 0:
        jax.block_until_ready(sums)
      if pending is not None:
        flush(pending)
        pending = None
      is_last = step == config.total_steps
      log_now = (step % config.log_every == 0 or is_last or
                 (first and not start_step))
      if first and not log_now:
        # A resumed run's first row comes a full log interval after the
        # checkpoint; the clock starts once the first step has run.
        jax.block_until_ready(sums)
        result['time_to_first_step_s'] = time.time() - start_time
        last_log = (step, time.time())
      if log_now:
        pending, sums = (step, unreplicate(sums)), new_sums()
      writer.advance(step)
      boundary = (step % config.eval_every == 0 or
                  step % config.checkpoint_every == 0 or is_last)
      preempted = stop.should_stop(step)
      if (boundary or preempted) and pending is not None:
        # Checked before any save: a non-finite run stops here, unsaved.
        flush(pending)
        pending = None
      if preempted:  # The checkpoint before anything else.
        save(step)
        ckpt.wait(manager)
        raise stop.preempted(step)
      if step % config.eval_every == 0 or is_last:
        final = evaluate(host_state().params)
        if final is None:
          save(step)
          ckpt.wait(manager)
          raise stop.preempted(step)
        writer.write(step, 'eval', final)
        if sample_fn is not None:
          write_samples(step)
      if step % config.checkpoint_every == 0 or is_last:
        save(step)
    if pending is not None:
      flush(pending)

    if final is None:
      logging.info('workdir already holds the final step %d', start_step)
      final = evaluate(host_state().params)
      if final is None:
        raise stop.preempted(start_step)
    ckpt.close(manager)
    writer.close()
    if stop.interrupts_now():  # During the final save: it has landed.
      raise stop.preempted(int(unreplicate(state).step))
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
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('while cleaning up after the error: %s',
                        ckpt._first_line(e))  # pylint: disable=protected-access
    # A run stopped before its first save leaves no empty checkpoints/.
    workdir_lib.remove_empty_dirs(os.path.join(workdir, 'checkpoints'))
    raise
