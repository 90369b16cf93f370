"""Orbax checkpoints: one directory per step holding the train state, the data
iterator's position and run metadata, saved asynchronously.

A half-written save never looks like a checkpoint (Orbax writes to a temporary
directory and renames it when complete). A damaged one — truncated files,
say — is moved aside to `corrupt-STEP-TIME` with a warning and the previous
step is restored; a checkpoint whose shapes do not fit the model is an error
that names the parameter, and nothing is touched.

Restoring goes through an abstract target whose `ShapeDtypeStruct`s carry the
*current* shardings, so a checkpoint written on 8 devices restores onto 1 or
onto another mesh layout (Orbax reshards while reading).
"""

import os
import re
import time
from typing import Any

from absl import logging
from etils import epath
import flax.linen as nn
import flax.traverse_util
import jax
import orbax.checkpoint as ocp

from bigml_jax.errors import ConfigError


class SaveError(OSError):
  """A checkpoint could not be written (disk full, permissions, ...)."""


def _first_line(e: Exception) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return (lines[-1] if lines else type(e).__name__)[:300]


def make_manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager in `directory` (created), async, keeping the last
  `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=True, create=True,
      cleanup_tmp_directories=True)
  # Declaring the items lets metadata be read before any save or restore.
  handlers = {'state': ocp.StandardCheckpointHandler(),
              'data': ocp.JsonCheckpointHandler(),
              'metadata': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict[str, Any] | None = None,
         metadata: dict[str, Any] | None = None) -> bool:
  """Starts an async save of step `step`; returns whether one was started.

  `data_state` (the input iterator's position) and `metadata` are JSON
  dicts restored alongside the state; both default to {}.

  Every process must call this (saving is collective); the arrays are copied
  off device before it returns, so the caller may donate `state` right after.
  Raises SaveError if this save, or the previous async one, failed.
  """
  try:
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        metadata=ocp.args.JsonSave(metadata or {})), force=True)
  except Exception as e:  # pylint: disable=broad-except
    raise SaveError(_save_failed(manager, e)) from e


def _save_failed(manager, e: Exception) -> str:
  kept = ', '.join(str(s) for s in manager.all_steps()) or 'none'
  return (f'saving a checkpoint in {manager.directory} failed '
          f'({_first_line(e)}); the complete checkpoints ({kept}) are intact: '
          'free disk space and rerun the same command to resume')


def wait(manager: ocp.CheckpointManager) -> None:
  """Blocks until async saves have landed; SaveError if one failed."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise SaveError(_save_failed(manager, e)) from e


def close(manager: ocp.CheckpointManager, *, after_error: bool = False
          ) -> None:
  """Waits for async saves, then stops the manager's threads.

  SaveError if a save failed; with `after_error` (the caller is already
  failing) that failure is logged instead, so it does not hide the first.
  """
  try:
    wait(manager)
  except SaveError as e:
    if not after_error:
      manager.close()
      raise
    logging.warning('%s', e)
  manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell Orbax where each restored array must live."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, target: Any
            ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """Restores (state, data_state, metadata) of `step` onto `target`'s
  shapes, dtypes and shardings (see `abstract_with_shardings`)."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      data=ocp.args.JsonRestore(),
      metadata=ocp.args.JsonRestore()))
  return restored.state, restored.data, restored.metadata


def _path_str(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def _stored_shape(x) -> tuple[int, ...]:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    # A typed key (jax.random.key) is stored as its key data: (2,) more.
    return tuple(jax.eval_shape(jax.random.key_data, x).shape)
  return tuple(x.shape)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {_path_str(p): _stored_shape(x) for p, x in leaves
          if hasattr(x, 'shape')}


def check_fits(manager: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Raises ConfigError naming the first parameter whose saved shape differs
  from the model's (or that only one of them has)."""
  saved = _shapes(manager.item_metadata(step)['state'].tree)
  wanted = _shapes(target)
  # Parameters first: the optimizer state mirrors them.
  for name in sorted(set(saved) | set(wanted),
                     key=lambda n: (not n.startswith('params'), n)):
    if saved.get(name) != wanted.get(name):
      raise ConfigError(
          f'checkpoint step {step} in {manager.directory} does not fit the '
          f'model: {name} is {saved.get(name, "absent")} in the checkpoint '
          f'but {wanted.get(name, "absent")} in the model; use a new --workdir '
          'or the config that wrote this one')


def _move_aside(manager: ocp.CheckpointManager, step: int) -> None:
  directory = os.fspath(manager.directory)
  if jax.process_index() == 0:
    os.rename(os.path.join(directory, str(step)),
              os.path.join(directory, f'corrupt-{step}-{int(time.time())}'))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'corrupt checkpoint {step}')
  manager.reload()


def restore_latest(manager: ocp.CheckpointManager, target: Any
                   ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
  """Restores the newest readable checkpoint onto `target`, or None if there
  is none. Unreadable ones are moved aside (see the module docstring)."""
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      check_fits(manager, step, target)
      return restore(manager, step, target)
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise many types for damaged files.
      logging.warning('checkpoint step %d in %s is unreadable (%s: %s); moved '
                      'aside, trying the previous one', step, manager.directory,
                      type(e).__name__, str(e).splitlines()[0][:200])
      _move_aside(manager, step)
  return None


def run_checkpoints(source: str, what: str = 'init_from'
                    ) -> tuple[str, str, int]:
  """(workdir, checkpoint directory, step) of `source`: a run's workdir or
  its checkpoints/ directory (the newest step), or one numbered step
  directory in it. Raises ConfigError, naming `source` as `what`, if it
  holds no checkpoint."""
  if '://' in str(source):
    raise ConfigError(f'{what} {source}: URLs are not supported yet; pass '
                      'a directory, e.g. the bucket mounted with gcsfuse')
  source = os.path.abspath(os.path.expanduser(str(source)))
  parent, name = os.path.split(source)
  if name.isdigit() and (os.path.isdir(os.path.join(source, 'state')) or
                         os.path.basename(parent) == 'checkpoints'):
    if not os.path.isdir(os.path.join(source, 'state')):
      others = [str(s) for s in _steps(parent) if s != int(name)]
      raise ConfigError(
          f'{what} {source} is not a finished checkpoint; ' +
          (f'{parent} has steps {", ".join(others)}' if others else
           f'{parent} holds no other'))
    directory, step = parent, int(name)
  else:
    directory = os.path.join(source, 'checkpoints')
    if (os.path.basename(source) == 'checkpoints' or
        not os.path.isdir(directory)):
      directory = source
    step = latest_step(directory)
  if step is None:
    raise ConfigError(f'{what} {source} holds no checkpoint; pass the '
                      'workdir of a run that saved one (its checkpoints/ has '
                      'numbered step directories)')
  workdir = (os.path.dirname(directory)
             if os.path.basename(directory) == 'checkpoints' else directory)
  return workdir, directory, step


def latest_step(directory: str) -> int | None:
  """The newest finished checkpoint step in `directory`, without opening a
  manager (which would create the directory)."""
  return max(_steps(directory), default=None)


def _steps(directory: str) -> list[int]:
  # Finished saves are renamed to their step number; temporary ones are not.
  return (sorted(int(d) for d in os.listdir(directory) if d.isdigit())
          if os.path.isdir(directory) else [])


def load_params(source: str, params: Any, skip: str | None = None, *,
                what: str = 'init_from') -> tuple[Any, dict[str, list[str]]]:
  """`params` read from the checkpoint in `source`, but for the names that
  match `skip`: fine-tuning from a pretrained run (big_vision's model_init
  with dont_load, MaxText's load_parameters_path).

  `source` is as in `run_checkpoints`; errors call it `what`. `params` may
  be boxed (as `init` returns them) and come back unboxed. Every leaf of
  `params` must be in the checkpoint, at the same name (e.g.
  'encoder/block_0/mlp/hidden/kernel') and shape, unless `skip` (a regex,
  `re.search`ed in each name; e.g. '^head/' for a new classifier head)
  matches its name: those keep their values. Leaves are read onto `params`' shardings and dtypes; the
  checkpoint's other leaves (a pretraining head, the optimizer state) are
  not read. Nothing in `source` is written.

  Returns:
    (params, report): report['loaded'], report['skipped'] and
    report['unused'] (checkpoint parameters not read), as names.

  Raises:
    ConfigError: `source` holds no checkpoint, or lacks a parameter that
      `skip` does not match, or holds it in another shape.
  """
  try:
    skip_re = re.compile(skip) if skip else None
  except re.error as e:
    raise ConfigError(f'init_skip {skip!r} is not a regular expression '
                      f'({e}); e.g. ^head/') from None
  params = nn.unbox(params)
  _, directory, step = run_checkpoints(source, what)
  step_dir = os.path.join(directory, str(step))
  state_dir = epath.Path(step_dir) / 'state'
  # The handler, not a Checkpointer: it reads the item directory without
  # looking for (and warning about) step-level metadata there.
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return _load_matching(handler, state_dir, params, skip_re, what)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Orbax and TensorStore raise many types for damaged files.
    others = [str(s) for s in _steps(directory) if s != step]
    raise ConfigError(
        f'{what}: checkpoint {step_dir} cannot be read ({_first_line(e)}); '
        + (f'{directory} also has steps {", ".join(others)}' if others else
           'pass another run')) from None
  finally:
    handler.close()


def _load_matching(handler: ocp.PyTreeCheckpointHandler, state_dir: epath.Path,
                   params: Any, skip_re: re.Pattern | None, what: str
                   ) -> tuple[Any, dict[str, list[str]]]:
  stored = _shapes(handler.metadata(state_dir).tree)
  stored = {k[len('params/'):]: v for k, v in stored.items()
            if k.startswith('params/')}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [_path_str(path) for path, _ in leaves]
  report = {'loaded': [], 'skipped': [], 'unused': []}
  wanted, misfits = {}, []
  for name, (_, x) in zip(names, leaves):
    if skip_re is not None and skip_re.search(name):
      report['skipped'].append(name)
    elif stored.get(name) == tuple(x.shape):
      report['loaded'].append(name)
      wanted[tuple(name.split('/'))] = jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=getattr(x, 'sharding', None))
    else:
      misfits.append(f'{name} ' + (
          'absent' if name not in stored else
          f'{stored[name]} there, {tuple(x.shape)} here'))
  if misfits:
    shown = ', '.join(misfits[:3]) + (
        f' and {len(misfits) - 3} more' if len(misfits) > 3 else '')
    raise ConfigError(
        f'{what}: checkpoint {state_dir.parent} does not hold '
        f'{len(misfits)} parameter(s) of this model as they are here: '
        f'{shown}; keep them as initialised with init_skip (a regex of '
        "names, e.g. '^head/'), or match the model to that run's")
  report['unused'] = sorted(set(stored) - set(report['loaded']))
  if report['skipped'] and not wanted:
    raise ConfigError(f'{what}: init_skip {skip_re.pattern!r} matches '
                      'every parameter, so nothing would be loaded; narrow it')
  if not wanted:
    return params, report
  item = {'params': flax.traverse_util.unflatten_dict(wanted)}
  restored = handler.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))
  loaded = flax.traverse_util.flatten_dict(restored['params'])
  values = [loaded.get(tuple(name.split('/')), x)
            for name, (_, x) in zip(names, leaves)]
  return jax.tree_util.tree_unflatten(treedef, values), report
