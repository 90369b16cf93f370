"""Evaluators: what a run measures on its eval split, chosen by config (as
big_vision's `config.evals`).

Every run evaluates its task's own metrics (loss, accuracy, perplexity...).
`config.evals` adds evaluators by name, each with its options, e.g.
`config.evals = {'frechet_distance': {'classifier_workdir': DIR}}`; left
empty, the task's own choice (`Task.evaluators`) applies. An evaluator is

  sums(params, batch, rng) -> metric sums   (jittable; sums add up exactly)
  summarize(sums) -> {name: value}          (on the host)

and all of them run in one compiled function per eval batch.
"""

from typing import Any

from bigml_jax.errors import ConfigError
from bigml_jax.evaluators.gan import FrechetDistance, RingCoverage
from bigml_jax.evaluators.metrics import TaskMetrics

EVALUATORS = {'ring_coverage': RingCoverage,
              'frechet_distance': FrechetDistance}


def build_evaluators(config, task, *, num_classes: int | None = None,
                     compute_dtype=None) -> dict[str, Any]:
  """{'metrics': TaskMetrics, name: evaluator, ...} for `config`: the task's
  metrics, then config.evals (or the task's own choice)."""
  chosen = dict(config.get('evals') or {}) or task.evaluators(config)
  unknown = sorted(set(chosen) - set(EVALUATORS))
  if unknown:
    raise ConfigError(f'evals {", ".join(unknown)} unknown; known evaluators: '
                      f'{", ".join(sorted(EVALUATORS))}')
  evaluators = {'metrics': TaskMetrics(task, compute_dtype=compute_dtype)}
  for name, options in chosen.items():
    evaluators[name] = EVALUATORS[name].from_options(
        task, dict(options or {}), num_classes=num_classes)
  return evaluators


__all__ = ['EVALUATORS', 'FrechetDistance', 'RingCoverage', 'TaskMetrics',
           'build_evaluators']
