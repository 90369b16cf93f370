"""Orbax checkpoints: one directory per step holding the train state, the data
iterator's position and run metadata, saved asynchronously.

Restoring goes through an abstract target whose `ShapeDtypeStruct`s carry the
*current* shardings, so a checkpoint written on 8 devices restores onto 1 or
onto another mesh layout (Orbax reshards while reading).
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def make_manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager in `directory` (created), async, keeping the last
  `max_to_keep` steps."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict[str, Any], metadata: dict[str, Any]) -> bool:
  """Starts an async save of step `step`; returns whether one was started.

  Every process must call this (saving is collective); the arrays are copied
  off device before it returns, so the caller may donate `state` right after.
  """
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave(data_state),
      metadata=ocp.args.JsonSave(metadata)), force=True)


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
