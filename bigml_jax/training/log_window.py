"""A log window's metric sums as a train row: means, rates, MFU and the
learning rate; a non-finite update stops the run (nan_policy='stop')."""

import time

from absl import logging
import jax

from bigml_jax.training import perf
from bigml_jax.training.preemption import NonFiniteError


class LogWindow:
  """Turns a log window's metric sums into a train row: means, rates, MFU,
  the learning rate; stops a run with a non-finite update (nan_policy)."""

  def __init__(self, run, flops, start_time: float):
    self.run, self.flops = run, flops
    self.peak = perf.peak_flops_per_device(run.mesh.devices.flat[0])
    self.start_time = start_time
    self.last = (run.step, time.time())
    self.rates: list[float] = []
    self.result = {'step': run.step}

  def first_step_done(self, step: int) -> None:
    """A resumed run's clock starts once its first step has run."""
    self.result['time_to_first_step_s'] = time.time() - self.start_time
    self.last = (step, time.time())

  def row(self, step: int, sums) -> dict[str, float]:
    run, config = self.run, self.run.config
    values = jax.device_get(sums)
    if values.get('nonfinite', 0) > 0:
      bad = int(values['min_nonfinite_step'])
      if config.nan_policy == 'stop':
        raise NonFiniteError(
            f'non-finite loss or gradient at step {bad}; the update was not '
            'applied and no non-finite state was saved. Lower the learning '
            'rate, clip gradients, or set nan_policy=skip')
      logging.warning('skipped %d non-finite update(s), first at step %d',
                      int(values['nonfinite']), bad)
    now = time.time()
    seconds = max(now - self.last[1], 1e-9)
    rate = (step - self.last[0]) / seconds
    if self.last[0] == run.step:
      self.result['time_to_first_step_s'] = now - self.start_time
    else:
      self.rates.append(rate * config.batch_size)
    self.last = (step, now)
    train = run.task.summarize(values)
    train['grad_norm'] = values['grad_norm_sum'] / max(values['steps'], 1.0)
    self.result['train_loss'] = float(train['loss'])
    devices = run.mesh.devices.size
    train.update(perf.throughput(rate, config.batch_size, devices,
                                 self.flops, self.peak))
    if run.task.counts == 'tokens':
      train['tokens_per_sec'] = values['count'] / seconds
      train['tokens_per_sec_per_device'] = train['tokens_per_sec'] / devices
    return dict(train, learning_rate=float(run.schedule(step - 1)))
