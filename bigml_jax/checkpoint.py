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
import time
from typing import Any

from absl import logging
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
