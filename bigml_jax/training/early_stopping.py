"""Early stopping: the eval at which a metric has stopped improving.

The tracker's state (the best value, its step, the evals since) travels in
each checkpoint's metadata, so a resumed run stops where an uninterrupted
one would.
"""

from typing import Any

from bigml_jax.config import ConfigError


class EarlyStopping:
  """config.early_stopping = {metric, mode, patience, min_delta}; `update`
  at every eval says when to stop."""

  def __init__(self, options, state: dict[str, Any] | None = None):
    self.metric, self.mode = options['metric'], options['mode']
    self.patience, self.min_delta = options['patience'], options['min_delta']
    state = state or {}
    self.best = state.get('best')
    self.best_step = state.get('best_step')
    self.evals_since = state.get('evals_since', 0)

  def state(self) -> dict[str, Any]:
    return {'best': self.best, 'best_step': self.best_step,
            'evals_since': self.evals_since}

  def update(self, step: int, metrics: dict[str, float]) -> str | None:
    """Records the eval at `step`; a line saying why the run stops here, or
    None to go on."""
    if self.metric not in metrics:
      raise ConfigError(f'early_stopping.metric {self.metric!r} is not an '
                        f'eval metric of this run; it logs '
                        f'{", ".join(sorted(metrics))}')
    value = float(metrics[self.metric])
    sign = 1.0 if self.mode == 'max' else -1.0
    if self.best is None or sign * (value - self.best) > self.min_delta:
      self.best, self.best_step, self.evals_since = value, step, 0
      return None
    self.evals_since += 1
    if self.evals_since < self.patience:
      return None
    return (f'early stopping at step {step}: eval {self.metric} has not '
            f'improved by more than {self.min_delta} for {self.patience} '
            f'evals (best {self.best:.4g} at step {self.best_step}); '
            'checkpoint saved')
