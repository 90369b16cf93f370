"""The device mesh, logical axis rules and the shardings derived from them.

Mesh axes are always ('data', 'fsdp', 'tensor'); their sizes come from
`config.mesh` with -1 meaning "all remaining devices". Models name their
parameter axes logically ('embed', 'mlp', ...); the rules below map logical
names to mesh axes. Batches are split over ('data', 'fsdp') together, as in
MaxText: FSDP is data parallelism whose parameters are sharded too.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

from bigml_jax.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')

# Logical name -> mesh axis (or None: replicated). Override per experiment with
# `config.logical_axis_rules`.
DEFAULT_RULES = (
    ('batch', BATCH_AXES),
    ('embed', 'fsdp'),
    ('mlp', 'tensor'),
    ('heads', 'tensor'),
    ('kv', None),
    ('vocab', 'tensor'),
)


def mesh_shape(mesh_config: 'Mapping[str, int] | ml_collections.ConfigDict',
               num_devices: int) -> tuple[int, ...]:
  """Resolves the sizes of ('data', 'fsdp', 'tensor'); one may be -1.

  Axes left out are 1, except `data`, which takes the remaining devices
  (-1) when no other axis does: {'fsdp': 2} is data x 2 x 1.
  """
  unknown = sorted(set(mesh_config.keys()) - set(MESH_AXES))
  if unknown:
    raise ConfigError(f'mesh has no axis {", ".join(unknown)}; its axes are '
                      f'{", ".join(MESH_AXES)}')
  chosen = {a: int(mesh_config[a]) for a in MESH_AXES if a in mesh_config}
  data = 1 if -1 in chosen.values() else -1
  sizes = [chosen.get(a, data if a == 'data' else 1) for a in MESH_AXES]
  given = ', '.join(f'{a}={s}' for a, s in zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f'mesh sizes ({given}) must be positive, with at most '
                      'one -1 for "the remaining devices"')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f'mesh ({given}) cannot cover {num_devices} devices: '
                        f'{num_devices} is not divisible by {known}')
    sizes[sizes.index(-1)] = num_devices // known
  elif known != num_devices:
    raise ConfigError(f'mesh ({given}) has {known} devices but there are '
                      f'{num_devices}; make the product {num_devices} or set '
                      'one axis to -1')
  return tuple(sizes)


def make_mesh(mesh_config: 'Mapping[str, int] | ml_collections.ConfigDict',
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all), sized
  by `mesh_config` (see `mesh_shape`), e.g. {'data': -1} or {'fsdp': 8}."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  dp = data_parallel_size(mesh)
  if batch_size % dp:
    raise ConfigError(f'batch_size {batch_size} is not divisible by {dp} '
                      f'data-parallel devices (mesh data*fsdp); use a multiple '
                      f'of {dp}')


def batch_sharding(mesh: Mesh, steps_per_call: int = 1) -> NamedSharding:
  """Leading (batch) dim split over data and fsdp; other dims replicated.
  With `steps_per_call` > 1, batches of that many steps stacked [K, B, ...]:
  B split the same way."""
  return NamedSharding(mesh, P(BATCH_AXES) if steps_per_call == 1 else
                       P(None, BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drops mesh axes from dims they do not divide (e.g. 10 classes over 4)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for name in names:
      size = mesh.shape[name] * int(np.prod([mesh.shape[k] for k in kept]))
      if dim % size == 0:
        kept.append(name)
    out.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  return P(*out)


def logical_shardings(abstract_tree, mesh: Mesh, rules=DEFAULT_RULES):
  """Shardings for a tree that may hold `nn.LogicallyPartitioned` leaves.

  Args:
    abstract_tree: output of `jax.eval_shape` over an init function, boxed
      (parameters and the optimizer state that mirrors them carry names).
    mesh: the device mesh.
    rules: logical name -> mesh axis pairs.

  Returns:
    A tree of `NamedSharding`s with the structure of `nn.unbox(abstract_tree)`.
    Unnamed leaves are replicated; a mesh axis that does not divide a dim is
    dropped for that dim, so any shape is valid on any mesh.
  """
  specs = nn.get_partition_spec(abstract_tree)
  shapes = nn.unbox(abstract_tree)

  def to_sharding(spec, leaf):
    mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else P()
    return NamedSharding(mesh, _fit(mesh_spec, leaf.shape, mesh))

  return jax.tree.map(to_sharding, specs, shapes,
                      is_leaf=lambda x: isinstance(x, P))
