"""The task's own metrics on the eval split: its loss and what it reports
(accuracy for classification, per-token perplexity for language models)."""

import dataclasses
from typing import Any

import jax

from bigml_jax.tasks.base import Task, cast_floats


@dataclasses.dataclass(frozen=True)
class TaskMetrics:
  """`task.loss_and_metrics` in eval mode (no dropout), with params and
  batch cast to `compute_dtype` as the train step casts them."""
  task: Task
  compute_dtype: Any = None

  def sums(self, params: Any, batch: dict, rng: jax.Array) -> dict:
    if self.compute_dtype is not None:
      params = cast_floats(params, self.compute_dtype)
      batch = cast_floats(batch, self.compute_dtype)
    return self.task.loss_and_metrics(params, batch, rng, train=False)[1]

  def summarize(self, sums: dict) -> dict[str, float]:
    return self.task.summarize(sums)
