"""Peak table, rates and MFU, per-compilation XLA options, FLOP counts."""

import types

import jax
import jax.numpy as jnp
import pytest

from bigml_jax.training import perf


@pytest.mark.parametrize('kind,peak', [
    ('NVIDIA H200', 989e12), ('NVIDIA A100-SXM4-80GB', 312e12),
    ('TPU v5 lite', 197e12), ('TPU v4', 275e12), ('cpu', None)])
def test_peak_flops_by_device_kind(kind, peak):
  assert perf.peak_flops_per_device(types.SimpleNamespace(device_kind=kind)) == peak


def test_throughput_and_mfu():
  rates = perf.throughput(10.0, 64, 8, flops=2e12, peak=100e12)
  assert rates['examples_per_sec'] == 640.0
  assert rates['examples_per_sec_per_device'] == 80.0
  assert rates['mfu'] == pytest.approx(0.2)  # 2e12 x 10 / 1e14.
  assert 'mfu' not in perf.throughput(10.0, 64, 8, flops=2e12, peak=None)


def test_compile_and_report_counts_matmul_flops():
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  compiled, flops = perf.compile_and_report(jax.jit(jnp.matmul), a, b)
  assert flops == 2 * 64 * 32 * 16
  assert (compiled(a, b) == 32.0).all()


def test_conv_steps_get_ynn_fusions_on_cpu_only():
  dense = jax.jit(lambda x, w: x @ w).lower(jnp.ones((4, 8)), jnp.ones((8, 2)))

  def conv_and_sum(x, k):  # A conv layer's output and its bias gradient.
    y = jax.lax.conv_general_dilated(
        x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y, y.sum((0, 1, 2))

  conv = jax.jit(conv_and_sum).lower(jnp.ones((16, 16, 16, 3)),
                                     jnp.ones((3, 3, 3, 32)))
  assert perf.compiler_options(dense) is None
  expected = ({'xla_cpu_experimental_ynn_fusion_type':
                   'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
              if jax.default_backend() == 'cpu' else None)
  assert perf.compiler_options(conv) == expected
  if expected:  # XLA accepts the option and the result is unchanged.
    compiled = conv.compile(expected)
    # The sum is a YNN fusion (REDUCE), not XLA's slower loop.
    assert any('ynn_fusion' in line and 'reduce_sum' in line
               for line in compiled.as_text().splitlines())
    x = jax.random.normal(jax.random.key(0), (16, 16, 16, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 32))
    for with_ynn, default in zip(compiled(x, k), conv.compile()(x, k)):
      assert jnp.allclose(with_ynn, default, rtol=1e-4, atol=1e-4)


def test_options_a_jaxlib_rejects_cost_speed_not_the_run(monkeypatch):
  monkeypatch.setattr(perf, 'compiler_options',
                      lambda lowered: {'xla_no_such_option_here': 'on'})
  a = jnp.ones((4, 8))
  with pytest.raises(Exception):  # XLA does reject it...
    jax.jit(jnp.sin).lower(a).compile({'xla_no_such_option_here': 'on'})
  compiled, _ = perf.compile_and_report(jax.jit(jnp.sin), a)  # ...we do not.
  assert jnp.allclose(compiled(a), jnp.sin(a))
