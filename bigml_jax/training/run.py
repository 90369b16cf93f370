"""A run assembled from its config, in one place: `build_run` for training
(the loop, benchmarks, sweeps) and `load_run` for what uses a trained run
(sample, explain, export, export_hf).

build_run: config -> mesh -> data sources -> task -> optimizer -> state in
its shards: restored from the workdir's newest intact checkpoint, or fresh
(from init_from's params when set). It reads the workdir; writing is the
loop's business.
"""

import copy
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp

from bigml_jax import checkpoint as ckpt
from bigml_jax.config import (ConfigError, check_resume, load_saved_config,
                              with_defaults)
from bigml_jax.data import pipeline
from bigml_jax.evaluators import build_evaluators
from bigml_jax.interop import hf
from bigml_jax.parallel import mesh as mesh_lib
from bigml_jax.parallel import multihost
from bigml_jax.tasks import build_task
from bigml_jax.tasks.base import Task
from bigml_jax.training import state as state_lib

CHECKPOINTS = 'checkpoints'


@dataclasses.dataclass
class Run:
  """Everything a run is made of; `state` is None for a loaded run, whose
  `params` alone are read."""
  config: ml_collections.ConfigDict  # With every default filled in.
  workdir: str
  mesh: jax.sharding.Mesh
  sources: pipeline.Sources
  preprocess: Callable[[dict], dict]
  task: Task
  params: Any
  step: int  # The step the state is at: where training resumes.
  shardings: state_lib.TrainState
  evaluators: dict[str, Any]
  state: state_lib.TrainState | None = None
  tx: optax.GradientTransformation | None = None
  schedule: optax.Schedule | None = None
  data_state: dict[str, Any] | None = None  # The train iterator's position.
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
  manager: ocp.CheckpointManager | None = None

  @property
  def tokenizer(self):
    return self.sources.tokenizer

  @property
  def class_names(self) -> list[str]:
    """The labels' names (the dataset's, or '0', '1', ...); [] if none."""
    if self.sources.class_names:
      return list(self.sources.class_names)
    return [str(i) for i in range(self.sources.fields.get('num_classes') or 0)]

  def train_iterator(self):
    """This process's train batches from the run's position in the data."""
    iterator = pipeline.train_iterator(
        self.sources.train, self.preprocess, seed=self.config.seed,
        global_batch_size=self.config.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    if self.data_state is not None:
      iterator.set_state(self.data_state)
    return iterator


def _check_mesh(config, mesh) -> None:
  mesh_lib.check_batch_size(config.batch_size, mesh)
  mesh_lib.check_batch_size(config.eval_batch_size or config.batch_size, mesh)
  split = config.microbatches * mesh_lib.data_parallel_size(mesh)
  if config.batch_size % split:
    raise ConfigError(
        f'batch_size {config.batch_size} does not split into '
        f'{config.microbatches} microbatches on '
        f'{mesh_lib.data_parallel_size(mesh)} data-parallel devices; use a '
        f'multiple of {split}')
  if config.parallelism == 'pmap' and (mesh.shape['fsdp'] > 1 or
                                       mesh.shape['tensor'] > 1):
    raise ConfigError('parallelism=pmap is data parallel only; set '
                      'mesh.fsdp=1 and mesh.tensor=1 (or use parallelism=jit)')
  if (_as_tuples(_rules(config)) != _as_tuples(mesh_lib.DEFAULT_RULES) and mesh.shape['fsdp'] > 1 and
      mesh.shape['tensor'] > 1):
    logging.warning(
        'custom logical_axis_rules on a mesh with fsdp and tensor > 1: XLA '
        'computes wrong gradients where an activation must be resharded '
        'between them (README, Known limits); compare a few steps against '
        'fsdp or tensor alone')


def _rules(config) -> tuple:
  return tuple(config.logical_axis_rules or mesh_lib.DEFAULT_RULES)


def _as_tuples(x):
  """Nested lists and tuples (a config's rules) as nested tuples."""
  return tuple(map(_as_tuples, x)) if isinstance(x, (list, tuple)) else x


def _check_own_step(config, task: Task, tx) -> None:
  """A task's own train step implements none of the default step's options."""
  if task.make_train_step(tx) is None:
    return
  defaults = with_defaults(ml_collections.ConfigDict())
  for field in ('parallelism', 'microbatches', 'compute_dtype'):
    if config[field] not in (defaults[field], 'float32'):
      raise ConfigError(f'task {config.task!r} has its own train step, which '
                        f'does not implement {field}={config[field]!r}; '
                        'remove it from the config')


def _load_data(config, tokenizer_candidates) -> tuple[pipeline.Sources,
                                                       Callable]:
  # Process 0 prepares a dataset missing from data_dir before the others
  # read it: on a shared data_dir they would race to write it.
  with multihost.primary_first('data prepared'):
    sources = pipeline.load_sources(
        config.dataset, tokenizer=pipeline.resolve_tokenizer(
            config.dataset, tokenizer_candidates))
  return sources, pipeline.make_preprocess(config.dataset, sources.train)


def _tokenizer_candidates(workdir: str, fix: str, init_workdir=None):
  candidates = [(os.path.join(workdir, pipeline.TOKENIZER_FILE), fix)]
  if init_workdir:
    candidates.append((os.path.join(init_workdir, pipeline.TOKENIZER_FILE),
                       ", the init_from run's"))
  return candidates


def build_run(config: ml_collections.ConfigDict, workdir: str, *,
              devices: Sequence[jax.Device] | None = None) -> Run:
  """The run of `config` in `workdir`, ready to train: its state restored
  from the newest intact checkpoint there, or fresh (from init_from's
  params, if set), laid out on the mesh. The checkpoint manager is open;
  the caller closes it (`checkpoint.close`).

  Raises ConfigError for a config that cannot describe a run here (also a
  resumed run's changed fields), checkpoint.RestoreError for a checkpoint
  that cannot be read.
  """
  config = with_defaults(config)
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  reached = ckpt.latest_step(checkpoints)
  if reached is not None and hf.source_dir(config.init_from):
    # Its architecture, read from hf:DIR at the start, is in config.json:
    # the resumed run needs DIR no more.
    config, hf_dir = _saved_model(config, workdir), None
  else:
    config, hf_dir = hf.resolve_init_from(config)
  if reached is not None:
    check_resume(config, workdir, reached)
  # Fine-tuning: a fresh run starts from another run's params, and reads
  # text with that run's tokenizer (its embedding rows are those ids). A
  # run with checkpoints of its own resumes and reads neither.
  init_from = config.init_from if reached is None else None
  init_workdir = init_from and (hf_dir or ckpt.run_checkpoints(init_from)[0])

  mesh = mesh_lib.make_mesh(config.mesh, devices)
  _check_mesh(config, mesh)
  sources, preprocess = _load_data(config, _tokenizer_candidates(
      workdir, ' or use a new workdir', init_workdir))
  task = build_task(config, **sources.fields)
  tx, schedule = task.make_optimizer(config)
  _check_own_step(config, task, tx)
  example = jax.tree.map(lambda x: x[None], preprocess(sources.train[0]))
  init_fn, abstract, shardings = state_lib.sharded_init(
      task, tx, example, mesh, _rules(config))
  evaluators = build_evaluators(config, task,
                                num_classes=sources.fields.get('num_classes'),
                                compute_dtype=config.compute_dtype or None)

  manager = ckpt.make_manager(checkpoints, config.max_to_keep,
                              config.keep_best)
  try:
    restored = ckpt.restore_latest(
        manager, ckpt.abstract_with_shardings(abstract, shardings))
    data_state, metadata = None, {}
    if restored is None:
      state = init_fn(jax.random.PRNGKey(config.seed))
      if init_from:
        state = state.replace(params=_init_params(config, state.params,
                                                  hf_dir))
    else:
      state, data_state, metadata = restored
      if config.init_from:
        logging.info('init_from %s is not read: the run resumes',
                     config.init_from)
      logging.info('resumed from %s at step %d', checkpoints, int(state.step))
    step = int(state.step)
    if step % config.steps_per_dispatch:
      raise ConfigError(
          f'the checkpoint in {checkpoints} is at step {step}, not a '
          f'multiple of steps_per_dispatch {config.steps_per_dispatch}; '
          'resume with steps_per_dispatch=1 (or one that divides it)')
  except BaseException:
    ckpt.close(manager, after_error=True)
    raise
  _log_size(state, mesh, config.parallelism)
  return Run(config=config, workdir=workdir, mesh=mesh, sources=sources,
             preprocess=preprocess, task=task, params=state.params, step=step,
             shardings=shardings, evaluators=evaluators, state=state, tx=tx,
             schedule=schedule, data_state=data_state, metadata=metadata,
             manager=manager)


def _log_size(state, mesh, parallelism: str) -> None:
  per_device = lambda tree: sum(x.addressable_shards[0].data.nbytes
                                for x in jax.tree.leaves(tree)) / 1e6
  logging.info('mesh %s (%s); %d parameters; per device: params %.2f MB, '
               'optimizer state %.2f MB', dict(mesh.shape), parallelism,
               sum(x.size for x in jax.tree.leaves(state.params)),
               per_device(state.params), per_device(state.opt_state))


def _saved_model(config, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the model section of the run saved in `workdir` (the
  fields `config` sets itself kept)."""
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    return config
  model = dict(load_saved_config(workdir).model)
  model.update(config.model)
  config = copy.deepcopy(config)
  config.model = ml_collections.ConfigDict(model)
  return config


def _init_params(config, params, hf_dir):
  load = hf.load_params if hf_dir else ckpt.load_params
  params, report = load(config.init_from, params, config.init_skip)
  logging.info('init_from %s: loaded %d parameters; kept as initialised '
               '(init_skip): %s; in the checkpoint, not used: %s',
               config.init_from, len(report['loaded']),
               ', '.join(report['skipped']) or 'none',
               ', '.join(report['unused']) or 'none')
  return params


def load_run(workdir: str, step: int | str | None = None, *,
             devices: Sequence[jax.Device] | None = None,
             what: str = '--workdir', portable: bool = False) -> Run:
  """A trained run, read back for use: its config, data, tokenizer, task
  and the params of its newest checkpoint (or of `step`), on its mesh (or
  over `devices`). Nothing in `workdir` is written.

  A run trained with cuDNN attention loads with XLA's off NVIDIA GPUs, or
  everywhere if `portable` (an export for every platform): the same
  function. Raises ConfigError, naming `what`, if `workdir` holds no
  trained run or no such step.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isfile(os.path.join(workdir, 'config.json')):
    raise ConfigError(f'{what} {workdir} holds no config.json; pass the '
                      'workdir of a run')
  source, source_what = os.path.join(workdir, CHECKPOINTS), what
  ckpt.run_checkpoints(source, what)  # One clear line if there is none.
  if step is not None:
    source, source_what = os.path.join(source, str(step)), '--step'
    ckpt.run_checkpoints(source, source_what)  # Lists the steps there are.
  config = with_defaults(load_saved_config(workdir))
  if (config.model.get('attention_impl') == 'cudnn' and
      (portable or jax.default_backend() != 'gpu')):
    config.model.attention_impl = 'xla'
  mesh = _mesh_here(config.mesh, devices)
  sources, preprocess = _load_data(config, _tokenizer_candidates(
      workdir, ", the run's"))
  if sources.tokenizer is not None and not os.path.isfile(
      os.path.join(workdir, pipeline.TOKENIZER_FILE)):
    raise ConfigError(f'{what} {workdir} holds no {pipeline.TOKENIZER_FILE}; '
                      'pass the workdir of a run on a text dataset as it '
                      'trained (the tokenizer is part of the run)')
  task = build_task(config, **sources.fields)
  example = jax.tree.map(lambda x: x[None], preprocess(sources.train[0]))
  # Shapes and shardings only: no optimizer state, nothing initialised.
  _, abstract, shardings = state_lib.sharded_init(
      task, optax.identity(), example, mesh, _rules(config))
  params, _ = ckpt.load_params(
      source, ckpt.abstract_with_shardings(abstract.params, shardings.params),
      what=source_what)
  _, _, loaded_step = ckpt.run_checkpoints(source, source_what)
  evaluators = build_evaluators(config, task,
                                num_classes=sources.fields.get('num_classes'),
                                compute_dtype=config.compute_dtype or None)
  return Run(config=config, workdir=workdir, mesh=mesh, sources=sources,
             preprocess=preprocess, task=task, params=params,
             step=loaded_step, shardings=shardings, evaluators=evaluators)


def _mesh_here(mesh_config, devices) -> jax.sharding.Mesh:
  """The run's mesh if it fits the devices here, else all of them on the
  data axis: Orbax reshards the params onto it."""
  try:
    return mesh_lib.make_mesh(mesh_config, devices)
  except ConfigError:
    return mesh_lib.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1}, devices)
