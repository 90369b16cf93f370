"""Why the transformer step is slower than PyTorch eager on XLA:CPU, and what
was tried (issue 7; see NOTES.md, "Transformer on CPU").

  python -m benchmarks.transformer_probes              # the probes that matter
  python -m benchmarks.transformer_probes --all        # every probe
  python -m benchmarks.transformer_probes --only ynn_off,attn_bhlk
  python -m benchmarks.transformer_probes --profile    # where the step's time goes
  python -m benchmarks.transformer_probes --list

Every probe is the framework's transformer train step (jax_workloads) with
one thing changed: per-compilation XLA options, or a model sub-layer swapped
for a variant with the *same parameter tree* (checked) and the same math
(the loss and gradients of both, from the same parameters, are compared and
printed). The baseline and the probe are built in one process and timed in
interleaved windows (a, b, a, b, ...); the gain is the median of the
per-pair rate ratios b/a, with the min and max ratio as the spread. The
machine is shared, so that ratio, not the absolute ex/s, is the result.

Model variants are swapped in by replacing names in the library modules'
globals (the blocks look them up at call time) only while the variant's
step is traced and compiled; the library's files are not changed.
"""

import argparse
import collections
import contextlib
import dataclasses
import functools
import glob
import re
import statistics
import tempfile
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigml_jax.models import attention as attention_lib
from bigml_jax.models import layers
from bigml_jax.models import transformer as transformer_lib

from benchmarks import jax_harness, jax_workloads
from benchmarks.workloads import WORKLOADS

W = WORKLOADS['transformer']


# ---------------------------------------------------------------------------
# Model variants: same parameter names and shapes as the library's layers.

def _ln_stats_onepass(x, eps):
  mean = x.mean(-1, keepdims=True)
  var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)
  return mean, jax.lax.rsqrt(var + eps)


class OnePassLayerNorm(nn.Module):
  """flax nn.LayerNorm's math (fast variance E[x^2] - E[x]^2, eps 1e-6,
  y = (x - mean) * rsqrt(var + eps) * scale + bias), written out."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  def scale_and_bias(self, d: int):
    """LayerNorm's [d] parameters, named as flax's; from a compact method."""
    scale = self.param('scale', nn.with_logical_partitioning(
        nn.initializers.ones_init(), ('embed',)), (d,), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('embed',)), (d,), jnp.float32)
    return scale, bias

  @nn.compact
  def __call__(self, x):
    scale, bias = self.scale_and_bias(x.shape[-1])
    mean, inv = _ln_stats_onepass(x.astype(jnp.float32), self.epsilon)
    return ((x - mean) * inv * scale + bias).astype(self.dtype)


@jax.custom_vjp
def _ln_core(x, scale, bias):
  mean, inv = _ln_stats_onepass(x, 1e-6)
  return (x - mean) * inv * scale + bias


def _ln_core_fwd(x, scale, bias):
  mean, inv = _ln_stats_onepass(x, 1e-6)
  xhat = (x - mean) * inv
  return xhat * scale + bias, (xhat, inv, scale)


def _ln_core_bwd(res, g):
  xhat, inv, scale = res
  red = tuple(range(g.ndim - 1))
  dscale = (g * xhat).sum(red)
  dbias = g.sum(red)
  gx = g * scale
  # The textbook LayerNorm gradient: one pass over gx and gx * xhat.
  dx = inv * (gx - gx.mean(-1, keepdims=True)
              - xhat * (gx * xhat).mean(-1, keepdims=True))
  return dx, dscale, dbias


_ln_core.defvjp(_ln_core_fwd, _ln_core_bwd)


class FusedGradLayerNorm(OnePassLayerNorm):
  """The same forward, with a hand-written backward (custom_vjp) in the
  form torch's native_layer_norm_backward uses, instead of autodiff's."""

  @nn.compact
  def __call__(self, x):
    scale, bias = self.scale_and_bias(x.shape[-1])
    return _ln_core(x.astype(jnp.float32), scale, bias).astype(self.dtype)


def layer_norm_factory(cls):
  def layer_norm(dtype, name=None):
    return cls(dtype=dtype, name=name)
  return layer_norm


def gelu_sigmoid(x):
  """tanh-GELU, 0.5 x (1 + tanh(z)) = x sigmoid(2 z): same function."""
  c = np.sqrt(2.0 / np.pi).astype(np.float32)
  return x * jax.nn.sigmoid(2.0 * c * (x + 0.044715 * x * x * x))


@jax.custom_vjp
def gelu_tanh_fused(x):
  return nn.gelu(x)


def _gelu_fwd(x):
  return nn.gelu(x), x


def _gelu_bwd(x, g):
  # d/dx 0.5 x (1 + t), t = tanh(c (x + a x^3)).
  c, a = np.float32(np.sqrt(2.0 / np.pi)), np.float32(0.044715)
  t = jnp.tanh(c * (x + a * x * x * x))
  dt = (1.0 - t * t) * c * (1.0 + 3.0 * a * x * x)
  return (g * (0.5 * (1.0 + t) + 0.5 * x * dt),)


gelu_tanh_fused.defvjp(_gelu_fwd, _gelu_bwd)


def mlp_block_with(gelu: Callable):
  class MlpBlockVariant(transformer_lib.MlpBlock):
    """The library's MlpBlock with another (same-function) GELU."""

    @nn.compact
    def __call__(self, x_BxLxD, train):
      h = layers.dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                       name='hidden')(x_BxLxD)
      h = nn.Dropout(self.dropout_rate, deterministic=not train)(gelu(h))
      return layers.dense(x_BxLxD.shape[-1], ('mlp', 'embed'),
                          dtype=self.dtype, name='out')(h)
  return MlpBlockVariant


class _HeadProjection(nn.Module):
  """DenseGeneral D -> (H, K)'s parameters ('kernel' [D, H, K], 'bias'
  [H, K]); the output is laid out [B, H, L, K] by the einsum itself."""
  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x_BxLxD):
    d = x_BxLxD.shape[-1]
    kernel = self.param('kernel', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ('embed', 'heads', 'kv')),
        (d, self.num_heads, self.head_dim), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('heads', 'kv')),
        (self.num_heads, self.head_dim), jnp.float32)
    return (jnp.einsum('bld,dhk->bhlk', x_BxLxD, kernel)
            + bias[None, :, None, :])


class _OutProjection(nn.Module):
  features: int

  @nn.compact
  def __call__(self, o_BxHxLxK):
    _, h, _, k = o_BxHxLxK.shape
    kernel = self.param('kernel', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ('heads', 'kv', 'embed')),
        (h, k, self.features), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('embed',)), (self.features,),
        jnp.float32)
    return jnp.einsum('bhlk,hkd->bld', o_BxHxLxK, kernel) + bias


class HeadMajorAttention(attention_lib.MultiHeadAttention):
  """MultiHeadAttention (einsum path, no dropout) computed in [B, H, L, K]
  layout from the projections on, so the batched dots need no transposes."""
  softmax: str = 'jax'

  @nn.compact
  def __call__(self, x_BxLxD, context_BxSxD=None, *, mask=None, causal=False,
               train=False):
    assert context_BxSxD is None and not causal
    assert not (train and self.dropout_rate > 0)
    features = self.qkv_features or x_BxLxD.shape[-1]
    k = features // self.num_heads
    q = _HeadProjection(self.num_heads, k, name='query')(x_BxLxD)
    kk = _HeadProjection(self.num_heads, k, name='key')(x_BxLxD)
    v = _HeadProjection(self.num_heads, k, name='value')(x_BxLxD)
    q = q / jnp.sqrt(k).astype(q.dtype)
    logits = jnp.einsum('bhlk,bhsk->bhls', q, kk)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    att = _softmax(logits, self.softmax)
    o = jnp.einsum('bhls,bhsk->bhlk', att, v)
    return _OutProjection(self.out_features or x_BxLxD.shape[-1],
                          name='out')(o)


def _softmax(x, kind):
  if kind == 'jax':
    return jax.nn.softmax(x, axis=-1)
  if kind == 'plain':  # The same function, differentiated by autodiff.
    e = jnp.exp(x - jax.lax.stop_gradient(x.max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)
  raise ValueError(kind)


def attention_weights_plain_softmax(q, k, mask=None):
  """attention.attention_weights with the softmax written out."""
  depth = q.shape[-1]
  q = q / jnp.sqrt(depth).astype(q.dtype)
  logits = jnp.einsum('blhk,bshk->bhls', q, k)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  return _softmax(logits, 'plain')


class TokenMatrixMlpBlock(transformer_lib.MlpBlock):
  """The library's MlpBlock on the tokens as one [B*L, D] matrix: the same
  Dense layers and GELU, reshaped in and out. Autodiff's weight gradients
  are then plain [B*L, in]^T [B*L, out] dots; on [B, L, D] they contract
  over two dims, which XLA:CPU runs as a transposed copy of the [B, L, F]
  gradient plus an Eigen dot at half speed."""

  @nn.compact
  def __call__(self, x_BxLxD, train):
    d = x_BxLxD.shape[-1]
    x_NxD = x_BxLxD.reshape(-1, d)
    h = layers.dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                     name='hidden')(x_NxD)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.gelu(h))
    y = layers.dense(d, ('mlp', 'embed'), dtype=self.dtype, name='out')(h)
    return y.reshape(x_BxLxD.shape)


_barrier = jax.lax.optimization_barrier


def _dense_2d(nt_forward: bool):
  """x [N, K] @ w [K, M] + b with a custom VJP that fixes the dot forms
  XLA:CPU runs fastest here (1 core, GF/s: [4096,256]x[256,1024] 69 as
  x @ w, 100 as x @ (w^T)^T; dW [1024,256] 67 as h^T g, 101 as (g^T h)^T).
  The optimization barriers stop the simplifier from folding the
  transposes back into the dot."""

  @jax.custom_vjp
  def dense(x, w, b):
    if nt_forward:
      return jnp.einsum('nk,mk->nm', x, _barrier(w.T)) + b
    return x @ w + b

  def fwd(x, w, b):
    return dense(x, w, b), (x, w)

  def bwd(res, g):
    x, w = res
    if x.shape[1] <= g.shape[1]:
      dw = x.T @ g
    else:
      dw = _barrier(g.T @ x).T
    return g @ w.T, dw, g.sum(0)

  dense.defvjp(fwd, bwd)
  return dense


class FormDense(nn.Module):
  """nn.Dense's parameters on a [N, K] input through `_dense_2d`."""
  features: int
  axes: tuple
  nt_forward: bool = False

  @nn.compact
  def __call__(self, x_NxK):
    kernel = self.param('kernel', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), self.axes),
        (x_NxK.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), self.axes[-1:]), (self.features,),
        jnp.float32)
    return _dense_2d(self.nt_forward)(x_NxK, kernel, bias)


class FormMlpBlock(transformer_lib.MlpBlock):
  """TokenMatrixMlpBlock with the dot forms fixed by `_dense_2d`."""

  @nn.compact
  def __call__(self, x_BxLxD, train):
    assert not (train and self.dropout_rate > 0)
    d = x_BxLxD.shape[-1]
    x_NxD = x_BxLxD.reshape(-1, d)
    h = FormDense(self.mlp_dim, ('embed', 'mlp'), True, name='hidden')(x_NxD)
    y = FormDense(d, ('mlp', 'embed'), False, name='out')(nn.gelu(h))
    return y.reshape(x_BxLxD.shape)


class TokenMatrixAttention(attention_lib.MultiHeadAttention):
  """The library's MultiHeadAttention (einsum path) with the Q/K/V and
  output projections applied to the tokens as one [B*L, D] matrix."""

  @nn.compact
  def __call__(self, x_BxLxD, context_BxSxD=None, *, mask=None, causal=False,
               train=False):
    assert context_BxSxD is None and not causal
    b, l, d = x_BxLxD.shape
    features = self.qkv_features or d
    head_shape = (self.num_heads, features // self.num_heads)
    project = lambda name: attention_lib._dense_general(  # pylint: disable=protected-access
        head_shape, ('embed', 'heads', 'kv'), dtype=self.dtype, name=name)
    x_NxD = x_BxLxD.reshape(b * l, d)
    q, k, v = (project(n)(x_NxD).reshape(b, l, *head_shape)
               for n in ('query', 'key', 'value'))
    att = attention_lib.attention_weights(q, k, mask)
    att = nn.Dropout(self.dropout_rate, deterministic=not train)(att)
    o = jnp.einsum('bhls,bshk->blhk', att, v).reshape(b * l, *head_shape)
    out = attention_lib._dense_general(  # pylint: disable=protected-access
        self.out_features or d, ('heads', 'kv', 'embed'), axis=(-2, -1),
        dtype=self.dtype, name='out')(o)
    return out.reshape(b, l, -1)


def batch_split_attention(chunks: int):
  """MultiHeadAttention whose softmax(QK^T)V core runs on `chunks` slices
  of the batch (concatenated after): XLA:CPU runs each batched dot
  [B*H] x [L, K] x [K, S] on one thread (1.0x from 1 to 2 cores), so
  independent slices let the thunk executor use both cores; the slices
  are also more cache-friendly. Same parameters and bitwise-identical
  results (each example's attention is computed alone either way)."""

  class BatchSplitAttention(attention_lib.MultiHeadAttention):

    @nn.compact
    def __call__(self, x_BxLxD, context_BxSxD=None, *, mask=None,
                 causal=False, train=False):
      assert context_BxSxD is None and not causal
      assert not (train and self.dropout_rate > 0)
      b, _, d = x_BxLxD.shape
      features = self.qkv_features or d
      head_shape = (self.num_heads, features // self.num_heads)
      project = lambda name: attention_lib._dense_general(  # pylint: disable=protected-access
          head_shape, ('embed', 'heads', 'kv'), dtype=self.dtype, name=name)
      q, k, v = (project(n)(x_BxLxD) for n in ('query', 'key', 'value'))
      mask = None if mask is None else jnp.broadcast_to(
          mask, (b,) + mask.shape[1:])
      step = -(-b // chunks)
      outs = []
      for i in range(0, b, step):
        sl = slice(i, i + step)
        att = attention_lib.attention_weights(
            q[sl], k[sl], None if mask is None else mask[sl])
        outs.append(jnp.einsum('bhls,bshk->blhk', att, v[sl]))
      out = jnp.concatenate(outs, 0)
      return attention_lib._dense_general(  # pylint: disable=protected-access
          self.out_features or d, ('heads', 'kv', 'embed'), axis=(-2, -1),
          dtype=self.dtype, name='out')(out)

  return BatchSplitAttention


# ---------------------------------------------------------------------------
# Probes.

@dataclasses.dataclass(frozen=True)
class Probe:
  name: str
  what: str
  prediction: str
  options: dict | None = None        # per-compilation XLA options
  patches: tuple = ()                # (module, attribute, replacement)


def _ynn(*kinds):
  return {'xla_cpu_experimental_ynn_fusion_type':
          ','.join(f'LIBRARY_FUSION_TYPE_{k.upper()}' for k in kinds)}


T, A = transformer_lib, attention_lib
PROBES = [Probe(*p[:3], **p[3]) for p in (
    # --- XLA options, per compilation --------------------------------------
    ('ynn_off', "XLA option ynn_fusion_type='' (dots through Eigen, no YNN)",
     'slower: YNN dots run at or above Eigen\'s', dict(options=_ynn())),
    ('ynn_individual_dot', 'ynn_fusion_type=individual_dot, the jax 0.10 '
     'default, set explicitly (A/A check)', '1.00x',
     dict(options=_ynn('individual_dot'))),
    ('sched_concurrency', 'xla_cpu_scheduler_type=CONCURRENCY_OPTIMIZED',
     '+0-5%: more independent thunks in flight on 2 cores',
     dict(options={'xla_cpu_scheduler_type':
                   'CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED'})),
    ('sched_memory', 'xla_cpu_scheduler_type=MEMORY_OPTIMIZED',
     '0 to -5%', dict(options={'xla_cpu_scheduler_type':
                               'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'})),
    ('vector_512', 'xla_cpu_prefer_vector_width=512 (default 256)',
     '+0-5% on the elementwise loops (Zen 4 AVX-512 is double-pumped 256)',
     dict(options={'xla_cpu_prefer_vector_width': 512})),
    ('fast_runtime', 'xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME',
     '0-3%', dict(options={'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_RUNTIME'})),
    ('fast_math', 'xla_cpu_enable_fast_math=true (NaN/Inf still honoured)',
     '+0-5% (cheaper tanh/exp/rsqrt); changes rounding',
     dict(options={'xla_cpu_enable_fast_math': True,
                   'xla_cpu_fast_math_honor_nans': True,
                   'xla_cpu_fast_math_honor_infs': True})),
    ('no_fusion_emitters', 'xla_cpu_use_fusion_emitters=false (legacy '
     'elemental IR emitter for loop fusions)', '0 to -10%',
     dict(options={'xla_cpu_use_fusion_emitters': False})),
    # --- Model code, same parameters and math ------------------------------
    ('mlp_2d', 'MlpBlock on the tokens as one [B*L, D] matrix (reshape in '
     'and out; same Dense layers)', '+5-10% (block profile: the MLP weight '
     'gradients run as a transposed copy + Eigen dot at ~50 GF/s/core)',
     dict(patches=((T, 'MlpBlock', TokenMatrixMlpBlock),))),
    ('mlp_forms', 'mlp_2d plus a custom VJP fixing the fastest dot forms '
     '(x @ (w^T)^T forward, narrow-operand-first weight gradients)',
     '+2-4% over mlp_2d', dict(patches=((T, 'MlpBlock', FormMlpBlock),))),
    ('attn_split4', 'attention core (QK^T, softmax, AV) on 4 batch slices '
     'of 8 (bitwise-identical)', '+2-4%: the batched attention dots do not '
     'scale from 1 to 2 cores (3.3 vs 3.4 ms); 4 independent slices can '
     'run concurrently (attention core fwd+bwd 31.9 -> 26.7 ms on 2 cores)',
     dict(patches=((T, 'MultiHeadAttention', batch_split_attention(4)),))),
    ('attn_split2', 'attention core on 2 batch slices of 16', '+2-4%',
     dict(patches=((T, 'MultiHeadAttention', batch_split_attention(2)),))),
    ('attn_2d', 'Q/K/V and output projections on the tokens as one '
     '[B*L, D] matrix', '+1-3%: removes transposed copies for the '
     'projection weight gradients',
     dict(patches=((T, 'MultiHeadAttention', TokenMatrixAttention),))),
    ('attn_bhlk', 'attention in [B, H, L, K] from the projections on '
     "('bld,dhk->bhlk'), no per-dot transposes",
     '+3-6%: removes 4 transpose copies of [32,4,128,64] per layer fwd+bwd',
     dict(patches=((T, 'MultiHeadAttention', HeadMajorAttention),))),
    ('softmax_plain', 'softmax as exp(x - stop_grad(max)) / sum, autodiff '
     'backward, instead of jax.nn.softmax', '0-2%',
     dict(patches=((A, 'attention_weights', attention_weights_plain_softmax),))),
    ('ln_onepass', 'LayerNorm written out (same one-pass stats as flax)',
     '0-2%: flax already fuses its stats',
     dict(patches=((T, 'layer_norm', layer_norm_factory(OnePassLayerNorm)),))),
    ('ln_custom_vjp', "LayerNorm with a hand-written backward (torch's "
     'formula: 2 row reductions) instead of autodiff', '+2-5%: fewer passes '
     'over [4096, 256] in the backward',
     dict(patches=((T, 'layer_norm', layer_norm_factory(FusedGradLayerNorm)),))),
    ('gelu_sigmoid', 'tanh-GELU as x * sigmoid(2z) (the same function)',
     '0-3%: one logistic instead of tanh and two multiplies',
     dict(patches=((T, 'MlpBlock', mlp_block_with(gelu_sigmoid)),))),
    ('gelu_custom_vjp', 'tanh-GELU with a hand-written derivative '
     '(custom_vjp, saves x only)', '+1-4%: the backward recomputes tanh '
     'instead of reading saved intermediates',
     dict(patches=((T, 'MlpBlock', mlp_block_with(gelu_tanh_fused)),))),
)]
PROBES_BY_NAME = {p.name: p for p in PROBES}


def get_probe(spec: str) -> Probe:
  """A probe by name, or several joined by '+' (patches and options
  merged), e.g. 'mlp_forms+ynn_off'."""
  parts = [PROBES_BY_NAME[n] for n in spec.split('+')]
  if len(parts) == 1:
    return parts[0]
  options = {}
  for p in parts:
    options.update(p.options or {})
  return Probe(spec, ' + '.join(p.name for p in parts),
               'product of the parts', options=options or None,
               patches=sum((p.patches for p in parts), ()))


@contextlib.contextmanager
def patched(patches):
  old = [(m, a, getattr(m, a)) for m, a, _ in patches]
  try:
    for m, a, new in patches:
      setattr(m, a, new)
    yield
  finally:
    for m, a, value in old:
      setattr(m, a, value)


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def build_runner(probe: Probe | None, params=None) -> jax_harness.Runner:
  """The framework's step (probe's patches applied while it is traced and
  compiled), started from `params` when given (same tree required)."""
  with patched(probe.patches if probe else ()):
    task, tx = jax_workloads.make_task_and_optimizer(W)
    bench = jax_harness.build(task, tx, W.batch(0))
    if params is not None:
      if (jax.tree.structure(params) != jax.tree.structure(bench.state.params)
          or jax.tree.map(jnp.shape, params) !=
          jax.tree.map(jnp.shape, bench.state.params)):
        raise ValueError(f'{probe.name}: parameter tree differs')
      bench.state = bench.state.replace(params=_copy(params),
                                        opt_state=tx.init(_copy(params)))
    return jax_harness.Runner(bench, probe.options if probe else None)


def loss_and_grad_diff(probe: Probe, params) -> dict:
  """Loss and gradients of the library model and of the probe's, from the
  same parameters and batch: |loss diff| and ||g1 - g0|| / ||g0|| over all
  parameters (per-leaf ratios are meaningless for leaves whose gradient is
  zero up to rounding, e.g. the attention key bias)."""
  batch = jax.tree.map(jnp.asarray, W.batch(0))
  rng = jax.random.key(0)

  def loss_grad(patches, options):
    with patched(patches):
      task, _ = jax_workloads.make_task_and_optimizer(W)
      f = jax.jit(jax.value_and_grad(
          lambda p: task.loss_and_metrics(p, batch, rng, True)[0]))
      return f.lower(params).compile(compiler_options=options)(params)

  (l0, g0), (l1, g1) = loss_grad((), None), loss_grad(probe.patches,
                                                      probe.options)
  sq = lambda t: sum(float(jnp.sum(jnp.square(x))) for x in jax.tree.leaves(t))
  err = sq(jax.tree.map(jnp.subtract, g0, g1))
  return {'loss': float(l0), 'loss_diff': abs(float(l1) - float(l0)),
          'grad_rel_err': float(np.sqrt(err / sq(g0)))}


def interleaved(run_a, run_b, *, pairs: int, window_s: float) -> dict:
  """Windows a, b, a, b, ... of whole steps; gain = median of the per-pair
  b/a rate ratios. Also the ratio of process CPU seconds per step (a/b),
  which load from other processes disturbs less than wall time (but which
  does not see a loss of parallelism)."""
  def steps_for(run):
    run(2)  # Warm (the first calls after compile pay one-off costs).
    start = time.perf_counter()
    run(1)
    return max(1, round(window_s / (time.perf_counter() - start)))

  na, nb = steps_for(run_a), steps_for(run_b)
  ra, rb, ca, cb = [], [], [], []
  for _ in range(pairs):
    for run, n, rates, cpu in ((run_a, na, ra, ca), (run_b, nb, rb, cb)):
      start, cpu0 = time.perf_counter(), time.process_time()
      run(n)
      rates.append(n * W.batch_size / (time.perf_counter() - start))
      cpu.append((time.process_time() - cpu0) / n)
  ratios = [b / a for a, b in zip(ra, rb)]
  return {'a': statistics.median(ra), 'b': statistics.median(rb),
          'gain': statistics.median(ratios), 'lo': min(ratios),
          'hi': max(ratios), 'pairs': pairs,
          'cpu_gain': statistics.median(a / b for a, b in zip(ca, cb)),
          'cpu_ms_a': statistics.median(ca) * 1e3}


def run_probes(names, *, pairs: int, window_s: float, check: bool = True):
  base = build_runner(None)
  params0 = _copy(base.state.params)
  rows = []
  for name in names:
    probe = get_probe(name)
    try:
      variant = build_runner(probe, params0)
      diff = loss_and_grad_diff(probe, params0) if check else {}
      stats = interleaved(base, variant, pairs=pairs, window_s=window_s)
    except Exception as e:  # pylint: disable=broad-except
      rows.append(dict(probe=name, what=probe.what,
                       prediction=probe.prediction,
                       error=str(e).strip().splitlines()[-1][:150]))
      print(f'{name}: failed: {rows[-1]["error"]}', flush=True)
      continue
    rows.append(dict(stats, **diff, probe=name, what=probe.what,
                     prediction=probe.prediction,
                     compile_s=variant.compile_s))
    print(row_line(rows[-1]), flush=True)
  return rows


def row_line(r) -> str:
  if 'error' in r:
    return f"| {r['probe']} | {r['what']} | {r['prediction']} | failed: " \
           f"{r['error']} | - | - | - |"
  check = (f"{r['loss_diff']:.1e} / {r['grad_rel_err']:.1e}"
           if 'loss_diff' in r else '-')
  return (f"| {r['probe']} | {r['what']} | {r['prediction']} | "
          f"{r['a']:.1f} -> {r['b']:.1f} | **{r['gain']:.2f}x** "
          f"({r['lo']:.2f}-{r['hi']:.2f}) | {r['cpu_gain']:.2f}x | {check} |")


TABLE_HEAD = ('| probe | what | prediction | ex/s base -> probe | gain '
              '(min-max of pairs) | CPU-time gain | loss diff / grad rel. err |\n'
              '|---|---|---|---:|---:|---:|---:|')


# ---------------------------------------------------------------------------
# Where the time goes: the profiler's per-thunk times, grouped.

def profile(steps: int = 5, options=None):
  """Runs the step under jax.profiler and sums each XLA thunk's time over
  the executor threads, grouped into dots (by shape) and the rest."""
  run = build_runner(None if options is None else
                     Probe('p', '', '', options=options))
  hlo = run.compiled.as_text()
  run(3)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    start = time.perf_counter()
    run(steps)
    wall = (time.perf_counter() - start) / steps * 1e3
    jax.profiler.stop_trace()
    data = jax.profiler.ProfileData.from_file(
        sorted(glob.glob(f'{d}/**/*.xplane.pb', recursive=True))[-1])
  per_op = collections.defaultdict(float)
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLAEigen'):
        continue
      for ev in line.events:
        if not ev.name.startswith(('ThunkExecutor', 'SlinkyThreadPool')):
          per_op[ev.name] += ev.duration_ns / steps / 1e6
  groups = collections.defaultdict(float)
  for name, ms in per_op.items():
    groups[_op_group(name, hlo)] += ms
  total = sum(per_op.values())
  print(f'step wall {wall:.0f} ms; thunk time summed over threads '
        f'{total:.0f} ms')
  for g, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f'  {ms:7.1f} ms {100 * ms / total:5.1f}%  {g}')
  return groups


@functools.lru_cache(maxsize=None)
def _computations(hlo: str) -> dict:
  return {m.group(1): m.group(2) for m in re.finditer(
      r'^%?([\w.\-]+) \([^\n]*\{\n(.*?)\n\}', hlo, re.S | re.M)}


def _op_group(name: str, hlo: str) -> str:
  m = re.search(r'\n\s*(?:ROOT )?%' + re.escape(name) +
                r' = (\S+) (\w[\w-]*)\((.*)', hlo)
  if not m:
    return 'other'
  shape, kind, rest = m.groups()
  body = rest
  if kind == 'fusion':
    called = re.search(r'calls=%([\w.\-]+)', rest)
    body = _computations(hlo).get(called.group(1), '') if called else ''
  if kind == 'dot' or ' dot(' in body:
    lib = 'ynn' if name.startswith('ynn') else 'eigen'
    return f'dot {shape.split("{")[0]} ({lib})'
  for op in ('scatter', 'gather', 'reduce', 'tanh', 'exponential', 'rsqrt',
             'transpose', 'broadcast', 'copy'):
    if f' {op}(' in body or name.startswith(op):
      return f'non-dot: {op}'
  return 'non-dot: elementwise'


# The probes that matter (the rest with --all): the winners, their
# combinations, and the closest losers.
DEFAULT = ['mlp_2d', 'mlp_forms', 'attn_split4', 'mlp_2d+attn_split4',
           'mlp_forms+attn_split4', 'mlp_forms+attn_split4+ynn_off',
           'ynn_off', 'attn_bhlk', 'ln_custom_vjp', 'gelu_custom_vjp']
ALL = [p.name for p in PROBES] + DEFAULT[3:6]


def measure_alone(spec: str, *, windows: int = 5, window_s: float = 1.0):
  """A variant (or the library step, spec 'library') timed alone the way
  `run.py --suite cpu` times the framework (timing.measure), for a
  fresh-process figure next to torch eager's."""
  from benchmarks import timing  # pylint: disable=g-import-not-at-top
  run = build_runner(None if spec == 'library' else get_probe(spec))
  stats = timing.measure(run, examples_per_step=W.batch_size,
                         windows=windows, window_s=window_s)
  print(f"{spec}: {stats['examples_per_sec']:.1f} ex/s (windows "
        f"{stats['examples_per_sec_min']:.1f}-"
        f"{stats['examples_per_sec_max']:.1f}), loss {run.loss():.4f}")
  return stats


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--only', default='')
  parser.add_argument('--all', action='store_true')
  parser.add_argument('--pairs', type=int, default=5)
  parser.add_argument('--window_s', type=float, default=2.0)
  parser.add_argument('--no_check', action='store_true')
  parser.add_argument('--profile', action='store_true')
  parser.add_argument('--list', action='store_true')
  parser.add_argument('--measure', default='',
                      help="time one variant alone, e.g. 'library' or "
                      "'mlp_forms+attn_split4' (run each in its own process)")
  args = parser.parse_args()
  if args.measure:
    measure_alone(args.measure)
    return
  if args.list:
    for p in PROBES:
      print(f'{p.name:20s} {"" if p.name in DEFAULT else "(--all) "}{p.what}')
    return
  if args.profile:
    profile()
    return
  names = (args.only.split(',') if args.only else
           ALL if args.all else DEFAULT)
  print(TABLE_HEAD, flush=True)
  rows = run_probes(names, pairs=args.pairs, window_s=args.window_s,
                    check=not args.no_check)
  print('\n' + TABLE_HEAD + '\n' + '\n'.join(row_line(r) for r in rows))


if __name__ == '__main__':
  main()
