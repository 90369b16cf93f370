"""Mesh sizes from config, and shardings from logical axis names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bigml_jax import ConfigError
from bigml_jax.models import MLP
from bigml_jax.parallel import mesh as mesh_lib


def _mesh_cfg(data, fsdp, tensor):
  return ml_collections.ConfigDict({'data': data, 'fsdp': fsdp, 'tensor': tensor})


@pytest.mark.parametrize('sizes,expected', [
    ((-1, 1, 1), (8, 1, 1)), ((2, -1, 1), (2, 4, 1)), ((2, 2, 2), (2, 2, 2)),
    ((1, 1, -1), (1, 1, 8)),
])
def test_mesh_shape_fills_minus_one(sizes, expected):
  assert mesh_lib.mesh_shape(_mesh_cfg(*sizes), 8) == expected


@pytest.mark.parametrize('sizes,message', [
    ((2, 2, 1), r'has 4 devices but there are 8'),
    ((3, -1, 1), r'8 is not divisible by 3'),
    ((-1, -1, 1), r'at most one -1'),
    ((0, 8, 1), r'must be positive'),
])
def test_mesh_shape_errors(sizes, message):
  with pytest.raises(ConfigError, match=message):
    mesh_lib.mesh_shape(_mesh_cfg(*sizes), 8)


def test_make_mesh_over_all_and_a_subset_of_devices():
  mesh = mesh_lib.make_mesh(_mesh_cfg(4, 2, 1))
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2, 'tensor': 1}
  assert mesh.devices.size == 8
  one = mesh_lib.make_mesh(_mesh_cfg(-1, 1, 1), jax.devices()[:1])
  assert one.devices.size == 1


def test_batch_size_must_divide_data_parallel_size():
  mesh = mesh_lib.make_mesh(_mesh_cfg(4, 2, 1))
  mesh_lib.check_batch_size(16, mesh)
  with pytest.raises(ConfigError, match='batch_size 12 is not divisible by 8 '
                     'data-parallel devices'):
    mesh_lib.check_batch_size(12, mesh)


def test_logical_shardings_fsdp_and_tensor():
  mesh = mesh_lib.make_mesh(_mesh_cfg(2, 2, 2))
  model = MLP(features=(64,), num_classes=10)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.ones((1, 32)))['params'])
  sh = mesh_lib.logical_shardings(abstract, mesh)
  # Hidden kernel [32, 64]: embed -> fsdp, mlp -> tensor.
  assert sh['Dense_0']['kernel'].spec == P('fsdp', 'tensor')
  # Head kernel [64, 10] ('embed', 'vocab'): 10 classes split over tensor=2.
  assert sh['Dense_1']['kernel'].spec == P('fsdp', 'tensor')
  # On a 3-way tensor axis 10 classes do not divide: that dim is replicated.
  mesh3 = jax.sharding.Mesh(
      np.array(jax.devices()[:6]).reshape(1, 2, 3), mesh_lib.MESH_AXES)
  sh3 = mesh_lib.logical_shardings(abstract, mesh3)
  assert sh3['Dense_1']['kernel'].spec == P('fsdp', None)
  assert sh3['Dense_1']['bias'].spec == P(None)


def test_one_mesh_axis_is_used_once_per_array():
  mesh = mesh_lib.make_mesh(_mesh_cfg(2, 2, 2))
  abstract = {'w': nn.LogicallyPartitioned(
      jax.ShapeDtypeStruct((4, 4), jnp.float32), ('mlp', 'heads'))}
  assert mesh_lib.logical_shardings(abstract, mesh)['w'].spec == P('tensor', None)


def test_fsdp_shards_parameter_bytes():
  mesh = mesh_lib.make_mesh(_mesh_cfg(1, 8, 1))
  model = MLP(features=(64,), num_classes=16)
  x = jnp.ones((1, 64))
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x)['params'])
  sh = mesh_lib.logical_shardings(abstract, mesh)
  params = jax.jit(lambda: nn.unbox(model.init(jax.random.key(0), x)['params']),
                   out_shardings=sh)()
  kernel = params['Dense_0']['kernel']
  assert kernel.addressable_shards[0].data.shape == (8, 64)  # 64 / 8 rows


@pytest.mark.xfail(strict=True, reason=(
    'XLA SPMD bug in jax 0.10.2 (CPU): a matmul whose operand is sharded over '
    'fsdp and tensor at once, with a batch sharded over (data, fsdp), returns '
    'wrong values for some output shardings. Meshes with fsdp > 1 and '
    'tensor > 1 give wrong gradients until this passes; then remove the '
    'xfail and the warning in make_mesh.'))
def test_xla_fsdp_times_tensor_matmul_is_correct():
  mesh = mesh_lib.make_mesh(_mesh_cfg(2, 2, 2))
  n = lambda *spec: jax.sharding.NamedSharding(mesh, P(*spec))
  g = jax.random.normal(jax.random.key(0), (32, 10))
  w = jax.random.normal(jax.random.key(1), (32, 10))
  f = lambda g, w: g @ w.T
  out = jax.jit(f, in_shardings=(n(('data', 'fsdp'), 'tensor'), n('fsdp', 'tensor')),
                out_shardings=n(('data', 'fsdp'), 'tensor'))(g, w)
  np.testing.assert_allclose(out, f(g, w), rtol=1e-5, atol=1e-5)
