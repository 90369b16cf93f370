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
  # Head kernel [64, 10] ('mlp', 'vocab'), a row-parallel layer: its input
  # arrives split over tensor, and tensor serves one dim only.
  assert sh['Dense_1']['kernel'].spec == P('tensor', None)
  # On a 3-way tensor axis 64 and 10 do not divide: both dims replicated.
  mesh3 = jax.sharding.Mesh(
      np.array(jax.devices()[:6]).reshape(1, 2, 3), mesh_lib.MESH_AXES)
  sh3 = mesh_lib.logical_shardings(abstract, mesh3)
  assert sh3['Dense_0']['kernel'].spec == P('fsdp', None)
  assert sh3['Dense_1']['kernel'].spec == P(None, None)
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
    'XLA SPMD bug (jax 0.10.2 and 0.12.0, CPU): with a batch sharded over '
    '(data, fsdp), a matmul that must reshard its output features from fsdp '
    'to tensor returns wrong values. The models never ask for that reshard '
    '(test_every_model_has_the_same_gradients_on_a_2x2x2_mesh); when this '
    'passes, drop the xfail and the README known limit.'))
def test_xla_fsdp_times_tensor_matmul_is_correct():
  mesh = mesh_lib.make_mesh(_mesh_cfg(2, 2, 2))
  n = lambda *spec: jax.sharding.NamedSharding(mesh, P(*spec))
  g = jax.random.normal(jax.random.key(0), (32, 10))
  w = jax.random.normal(jax.random.key(1), (32, 10))
  f = lambda g, w: g @ w.T
  out = jax.jit(f, in_shardings=(n(('data', 'fsdp'), 'tensor'), n('fsdp', 'tensor')),
                out_shardings=n(('data', 'fsdp'), 'tensor'))(g, w)
  np.testing.assert_allclose(out, f(g, w), rtol=1e-5, atol=1e-5)


def _tokens(key, shape, vocab):
  return jax.random.randint(key, shape, 1, vocab)


# Every classifier and LM family, tiny: (model config, batch of 8). The GAN
# networks were checked the same way by hand, and a DCGAN run on 2x2x2
# matched one device's losses to 1e-7.
_ZOO = {
    'mlp': ({'name': 'mlp', 'features': (32, 16, 24), 'num_classes': 10},
            lambda k: {'image': jax.random.normal(k, (8, 8, 8, 1)),
                       'label': jnp.arange(8) % 10}),
    # An even number of hidden layers: the head's kernel is [embed, vocab].
    'mlp_even': ({'name': 'mlp', 'features': (32, 16), 'num_classes': 10},
                 lambda k: {'image': jax.random.normal(k, (8, 8, 8, 1)),
                            'label': jnp.arange(8) % 10}),
    'cnn': ({'name': 'cnn', 'channels': (8, 16), 'dense': (32,),
             'num_classes': 10},
            lambda k: {'image': jax.random.normal(k, (8, 8, 8, 1)),
                       'label': jnp.arange(8) % 10}),
    'conv_attention': ({'name': 'conv_attention_cnn', 'channels': (8, 16),
                        'dense': (16,), 'num_heads': 2, 'num_classes': 10},
                       lambda k: {'image': jax.random.normal(k, (8, 8, 8, 1)),
                                  'label': jnp.arange(8) % 10}),
    'vit': ({'name': 'vit', 'patch_size': 2, 'd_model': 16, 'num_layers': 2,
             'num_heads': 2, 'mlp_dim': 32, 'num_classes': 10},
            lambda k: {'image': jax.random.normal(k, (8, 8, 8, 1)),
                       'label': jnp.arange(8) % 10}),
    'bert': ({'name': 'bert', 'vocab_size': 32, 'num_classes': 3,
              'num_layers': 2, 'd_model': 16, 'num_heads': 2, 'mlp_dim': 32,
              'max_len': 12, 'pooling': 'mean', 'dropout_rate': 0.0},
             lambda k: {'tokens': _tokens(k, (8, 12), 32),
                        'label': jnp.arange(8) % 3}),
    'rnn': ({'name': 'rnn_classifier', 'vocab_size': 32, 'num_classes': 3,
             'cell': 'gru', 'embed_dim': 16, 'hidden_dim': 16},
            lambda k: {'tokens': _tokens(k, (8, 12), 32),
                       'label': jnp.arange(8) % 3}),
    'gpt': ({'name': 'gpt', 'vocab_size': 32, 'num_layers': 2, 'd_model': 16,
             'num_heads': 2, 'mlp_dim': 32, 'max_len': 12},
            lambda k: {'tokens': _tokens(k, (8, 13), 32)}),
}


@pytest.mark.parametrize('name', sorted(_ZOO))
def test_every_model_has_the_same_gradients_on_a_2x2x2_mesh(name):
  """data x fsdp x tensor: the models' logical names must never ask XLA to
  reshard an activation between fsdp and tensor, which it gets wrong (the
  xfail above)."""
  from bigml_jax.models import build_model  # pylint: disable=g-import-not-at-top
  from bigml_jax.tasks import ClassificationTask, LMTask  # pylint: disable=g-import-not-at-top
  model_cfg, make_batch = _ZOO[name]
  model = build_model(ml_collections.ConfigDict(model_cfg))
  batch = make_batch(jax.random.key(1))
  task = (LMTask(model) if name == 'gpt' else ClassificationTask(
      model, input_key='tokens' if 'tokens' in batch else 'image'))
  boxed = jax.eval_shape(task.init, jax.random.key(0), batch)
  params = nn.unbox(jax.jit(task.init)(jax.random.key(0), batch))
  grad = jax.grad(lambda p, b: task.loss_and_metrics(
      p, b, jax.random.key(2), train=True)[0])
  expected = jax.jit(grad)(params, batch)

  mesh = mesh_lib.make_mesh(_mesh_cfg(2, 2, 2))
  shardings = mesh_lib.logical_shardings(boxed, mesh)
  assert any(s.spec and 'tensor' in jax.tree.leaves(tuple(s.spec))
             for s in jax.tree.leaves(shardings)), 'nothing tensor-sharded'
  batch_sharding = mesh_lib.batch_sharding(mesh)
  sharded = jax.jit(grad, in_shardings=(shardings, batch_sharding),
                    out_shardings=shardings)(
                        jax.device_put(params, shardings),
                        jax.device_put(batch, batch_sharding))
  for path, got in jax.tree_util.tree_leaves_with_path(sharded):
    want = expected
    for k in path:
      want = want[k.key]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_mesh_axes_left_out():
  assert mesh_lib.mesh_shape({}, 8) == (8, 1, 1)
  assert mesh_lib.mesh_shape({'fsdp': 2}, 8) == (4, 2, 1)
  assert mesh_lib.mesh_shape({'fsdp': -1, 'tensor': 2}, 8) == (1, 4, 2)
  assert mesh_lib.make_mesh({'tensor': 2}).shape == {'data': 4, 'fsdp': 1,
                                                    'tensor': 2}
  with pytest.raises(ConfigError, match='mesh has no axis model; its axes '
                     'are data, fsdp, tensor'):
    mesh_lib.mesh_shape({'model': 2}, 8)
