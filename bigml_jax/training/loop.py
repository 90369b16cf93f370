"""train_and_evaluate(config, workdir): one run, read top to bottom.

Set up (the workdir, locked; the run, from `build_run`: restored or fresh),
then train: each step dispatched without waiting, metrics logged one step
late, evaluation and checkpoints at their boundaries. Rerunning with the
same workdir resumes from its newest intact checkpoint; SIGTERM/SIGINT end
the run with a checkpoint at the current step.
"""

import os
import time
from collections.abc import Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

from bigml_jax import checkpoint as ckpt
from bigml_jax import workdir as workdir_lib
from bigml_jax.config import ConfigError, save_config, validate_config
from bigml_jax.data import pipeline
from bigml_jax.metrics import MetricWriter
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.training.early_stopping import EarlyStopping
from bigml_jax.training.evaluation import Evaluation
from bigml_jax.training.log_window import LogWindow
from bigml_jax.training.preemption import Preempted, StopSignal
from bigml_jax.training.run import build_run
from bigml_jax.training.trainer import make_trainer


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
    Final metrics: eval_* (every evaluator's), train_loss, step,
    time_to_first_step_s (from this call to the end of the first train
    step) and examples_per_sec (median over log windows after the first).

  Raises:
    ConfigError: for mistakes in the config or workdir (nothing is written;
      a workdir this call created is removed again).
    Preempted: after SIGTERM/SIGINT, once the current step is checkpointed.
    NonFiniteError: a non-finite loss or gradient with nan_policy='stop'.
    checkpoint.SaveError, checkpoint.RestoreError: a checkpoint could not
      be written (disk full) or read; nothing else was lost.
  """
  start_time = time.time()
  validate_config(config)
  with StopSignal() as stop:
    workdir, created = workdir_lib.make(workdir, jax.process_index())
    lock = workdir_lib.Lock(workdir)
    try:
      if multihost.is_primary():
        lock.acquire()
      run = build_run(config, workdir, devices=devices)
      return _train(run, stop, start_time)
    except ConfigError:
      lock.release()
      if created:  # A mistake found before the run wrote anything.
        workdir_lib.remove_empty_dirs(workdir)
      raise
    finally:
      lock.release()


def _train(run, stop: StopSignal, start_time: float) -> dict[str, float]:
  loop = None
  try:
    loop = _Loop(run, stop, start_time)
    return loop.train()
  except BaseException:
    # Stop the checkpoint and writer threads, which would otherwise keep
    # the process alive or files open in a caller; a failure here (a full
    # disk again) is logged so the first error is the one raised.
    cleanups = [lambda: ckpt.close(run.manager, after_error=True)]
    if loop is not None and loop.writer is not None:
      cleanups.append(loop.writer.close)
    for cleanup in cleanups:
      try:
        cleanup()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('while cleaning up after the error: %s',
                        ckpt.first_line(e))
    # A run stopped before its first save leaves no empty checkpoints/.
    workdir_lib.remove_empty_dirs(os.path.join(run.workdir, 'checkpoints'))
    raise


def _check_watched_metrics(config, names: set[str]) -> None:
  for section in ('early_stopping', 'keep_best'):
    metric = config[section].metric
    if metric is not None and metric not in names:
      raise ConfigError(f'{section}.metric {metric!r} is not an eval metric '
                        f'of this run; it logs {", ".join(sorted(names))}')


class _Loop:
  """The train loop of one run: set up, steps, the end."""

  def __init__(self, run, stop: StopSignal, start_time: float):
    self.run, self.stop, self.writer = run, stop, None
    config = run.config
    self.evaluate = Evaluation(run, stop.interrupts_now)
    if config.early_stopping.metric or config.keep_best.metric:
      _check_watched_metrics(config, self.evaluate.metric_names())
    if multihost.is_primary():  # Past the config's checks: the run starts.
      save_config(config, run.workdir, run.step)
      pipeline.save_tokenizer(run.sources, run.workdir)
    self.train_iter = run.train_iterator()
    self.trainer = make_trainer(run, self.read())
    self.early = (EarlyStopping(config.early_stopping,
                                run.metadata.get('early_stopping'))
                  if config.early_stopping.metric else None)
    self.sample = (jax.jit(run.task.samples,
                           out_shardings=mesh_lib.replicated(run.mesh))
                   if run.task.num_samples > 0 else None)
    self.window = LogWindow(run, self.trainer.flops, start_time)
    self.writer = MetricWriter(run.workdir, enabled=multihost.is_primary(),
                               total_steps=config.total_steps,
                               initial_step=run.step)

  def read(self):
    k = self.run.config.steps_per_dispatch
    return (next(self.train_iter) if k == 1 else
            pipeline.next_stacked(self.train_iter, k))

  def save(self, step: int, metrics=None, stopped: bool = False) -> None:
    """A checkpoint of `step`; `metrics`, its eval's, rank it (keep_best)."""
    metadata = {'step': step, 'model': self.run.config.model.get('name', '')}
    if self.early is not None:
      metadata.update(early_stopping=self.early.state(), early_stopped=stopped)
    ckpt.save(self.run.manager, step, self.trainer.host_state(),
              self.train_iter.get_state(), metadata, metrics=metrics and {
                  k: float(v) for k, v in metrics.items()})

  def save_and_stop(self, step: int) -> Preempted:
    self.save(step)
    ckpt.wait(self.run.manager)
    return self.stop.preempted(step)

  def write_samples(self, step: int) -> None:
    """Tasks that generate (a GAN, an LM) show samples at every eval."""
    samples = np.asarray(self.sample(
        self.trainer.host_state().params,
        jax.random.fold_in(jax.random.PRNGKey(self.run.config.seed), step)))
    if self.run.tokenizer is None:
      self.writer.write_images(step, 'samples', samples)
    else:
      self.writer.write_texts(step, 'samples',
                              [self.run.tokenizer.decode(s) for s in samples])

  def log(self, pending) -> None:
    self.writer.write(pending[0], 'train', self.window.row(*pending))

  def train(self) -> dict[str, float]:
    run, config, trainer, stop = self.run, self.run.config, self.trainer, self.stop
    if stop.interrupts_now():
      raise Preempted(f'stopped by {stop.received} before the first step; '
                      'nothing new to save, rerun the same command to '
                      + ('resume' if run.step else 'start'))
    # A log window's sums are fetched only after the next step is
    # dispatched, so the device never idles waiting for the host.
    per_call, pending, final = config.steps_per_dispatch, None, None
    drain = (8 if jax.default_backend() == 'cpu' and
             len(run.mesh.local_devices) > 1 else 0)  # Evaluation's reason.
    end = config.total_steps
    if self.early is not None and run.metadata.get('early_stopped'):
      logging.info('the run stopped early at step %d', run.step)
      end = run.step
    for step in range(run.step + per_call, end + 1, per_call):
      first = step == run.step + per_call
      trainer.step(trainer.first_batch if first else
                   trainer.to_device(self.read()))
      if drain and (step // per_call) % drain == 0:
        jax.block_until_ready(trainer.sums())
      if pending is not None:
        self.log(pending)
        pending = None
      is_last = step == config.total_steps
      log_now = (step % config.log_every == 0 or is_last or
                 (first and not run.step))
      if first and not log_now:
        jax.block_until_ready(trainer.sums())
        self.window.first_step_done(step)
      if log_now:
        pending = (step, trainer.take_sums())
      self.writer.advance(step)
      boundary = (step % config.eval_every == 0 or
                  step % config.checkpoint_every == 0 or is_last)
      preempted = stop.should_stop(step)
      if (boundary or preempted) and pending is not None:
        self.log(pending)  # Before any save: a non-finite run stops unsaved.
        pending = None
      if preempted:  # The checkpoint before anything else.
        raise self.save_and_stop(step)
      saves = step % config.checkpoint_every == 0 or is_last
      if step % config.eval_every == 0 or is_last:
        final = self.evaluate(trainer.host_state().params)
        if final is None:
          raise self.save_and_stop(step)
        self.writer.write(step, 'eval', final)
        if self.sample is not None:
          self.write_samples(step)
        stopping = self.early and self.early.update(step, final)
        if saves or stopping or config.keep_best.metric:
          self.save(step, final, stopped=bool(stopping))
          saves = False
        if stopping:
          logging.info('%s', stopping)
          self.window.result['early_stopped_step'] = step
          break
      if saves:
        self.save(step)
    if pending is not None:
      self.log(pending)
    return self.finish(final)

  def finish(self, final) -> dict[str, float]:
    """The final evaluation (a finished run's, again), saves landed."""
    if final is None:
      logging.info('workdir already holds the final step %d', self.run.step)
      final = self.evaluate(self.trainer.host_state().params)
      if final is None:
        raise self.stop.preempted(self.run.step)
    ckpt.close(self.run.manager)
    self.writer.close()
    if self.stop.interrupts_now():  # During the final save: it has landed.
      raise self.stop.preempted(self.trainer.step_number())
    result = dict(self.window.result, step=self.trainer.step_number())
    result.update({f'eval_{k}': float(v) for k, v in final.items()})
    if self.window.rates:
      result['examples_per_sec'] = float(np.median(self.window.rates))
    return result
