"""Tasks: what is optimised — loss, metrics and, where it differs from the
default (loss -> grad -> update), the train step itself.

`build_task(config, **sources.fields)` returns `TASKS[config.task]` built with
its model(s) from `config.model`. A task provides:
  init(rng, batch) -> params (boxed with logical axis names)
  loss_and_metrics(params, batch, rng, train) -> (loss, metric sums)
  summarize(sums) -> {name: mean}
and optionally make_train_step(tx) for a step of its own.
"""

from typing import TYPE_CHECKING

from bigml_jax.errors import ConfigError
from bigml_jax.tasks.classification import ClassificationTask
from bigml_jax.tasks.gan import GanTask
from bigml_jax.tasks.lm import LMTask
from bigml_jax.tasks.mlm import MLMTask

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

TASKS = {'classification': ClassificationTask, 'lm': LMTask,
         'mlm': MLMTask, 'gan': GanTask}


def build_task(config: 'ml_collections.ConfigDict', **data_fields):
  """The task named by `config.task` (default 'classification').

  `data_fields` are facts from the data the model needs: num_classes for
  labels, vocab_size for text (both for labelled text); the pipeline's
  `Sources.fields` holds exactly those of its dataset.
  """
  name = config.get('task', 'classification')
  if name not in TASKS:
    raise ConfigError(f'task {name!r} is unknown; known tasks: '
                      f'{", ".join(sorted(TASKS))}')
  return TASKS[name].from_config(config, **data_fields)


__all__ = ['ClassificationTask', 'GanTask', 'LMTask', 'MLMTask', 'TASKS',
           'build_task']
