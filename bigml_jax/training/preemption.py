"""How a run stops early: a signal (preemption, Ctrl-C), at a step every
process agrees on, or a non-finite update."""

import os
import signal

import jax


class Preempted(Exception):
  """Raised after a SIGTERM/SIGINT once the current step is checkpointed."""


class NonFiniteError(FloatingPointError):
  """A non-finite loss or gradient, with nan_policy='stop'."""


class StopSignal:
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

  def preempted(self, step: int) -> Preempted:
    return Preempted(f'stopped by {self.received or "preemption"} at step '
                     f'{step}; checkpoint saved, rerun the same command to '
                     'resume')
