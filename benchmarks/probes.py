"""CPU speed-ups tried on the workloads (issue 7, item 3); see NOTES.md.

Each probe is a workload with one thing changed: a layer implementation
(benchmarks/cpu_layers.py), the attention path, the train step, or XLA flags.
It runs through the same harness as the cpu suite (framework train step,
fresh process, median of timed windows) next to the unchanged workload, so
the ratio between the two is the probe's gain.

  python -m benchmarks.run --suite probes [--workloads cnn,gan] [--json P]
"""

import dataclasses

import jax
import optax

from benchmarks import cpu_layers, timing
from benchmarks import run as run_lib
from benchmarks.workloads import GAN, WORKLOADS


# XLA:CPU library paths (jax 0.10): YNNPACK and XNNPACK fusions, oneDNN.
XLA_FLAG_SETS = (
    ('ynn_dot_eltwise_reduce',
     '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce'),
    ('ynn_eltwise', '--xla_cpu_experimental_ynn_fusion_type=eltwise'),
    ('ynn_dot', '--xla_cpu_experimental_ynn_fusion_type=dot'),
    ('xnn_dot_eltwise_reduce',
     '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce'),
    ('onednn', '--xla_cpu_experimental_onednn_custom_call=true'),
)


@dataclasses.dataclass(frozen=True)
class Probe:
  name: str
  workload: str
  what: str
  xla_flags: str = ''


PROBES = [Probe(*p) for p in (
    ('cnn/reduce_window_pool', 'cnn', 'max-pool by nn.max_pool (reduce_window) '
     'instead of the framework\'s reshape + max'),
    ('cnn/im2col', 'cnn', 'conv as k*k shifted slices + one matmul'),
    ('cnn/patches', 'cnn', 'conv as conv_general_dilated_patches + matmul'),
    ('cnn/plain_step', 'cnn', 'value_and_grad + optax update only: no grad '
     'norm, no non-finite guard'),
    ('cnn/guard_no_param_norm', 'cnn', 'framework step without the updated '
     "parameters' norm in the non-finite check"),
    ('cnn/guard_updates_norm', 'cnn', "the updates' norm in the non-finite "
     "check instead of the updated parameters'"),
    ('cnn/guard_no_where', 'cnn', 'framework step computing the norms but '
     'applying the update unconditionally'),
    ('mlp/plain_step', 'mlp', 'value_and_grad + optax update only'),
    ('mlp/guard_no_param_norm', 'mlp', 'framework step without the updated '
     "parameters' norm in the non-finite check"),
    ('mlp/guard_no_where', 'mlp', 'framework step computing the norms but '
     'applying the update unconditionally'),
    ('gan/matmul_convs', 'gan', 'G: transposed convs as matmul + sub-pixel '
     'overlap-add; D: convs as im2col + matmul'),
    ('gan/matmul_g_only', 'gan', 'G: transposed convs as matmul + overlap-add; '
     'D unchanged'),
    ('transformer/xla_attention', 'transformer', "attention_impl='xla' "
     '(jax.nn.dot_product_attention)'),
    ('transformer/fused_qkv', 'transformer', 'Q, K, V from one [D, 3, H, '
     'd_k] projection'),
    ('transformer/fused_qkv_xla', 'transformer', "fused QKV and "
     "attention_impl='xla'"),
    ('transformer/plain_step', 'transformer', 'value_and_grad + optax only'),
)] + [Probe(f'{w}/{flag_name}', w, f'XLA_FLAGS={flags}', flags)
      for w in WORKLOADS for flag_name, flags in XLA_FLAG_SETS] + [
    Probe(f'{w}/{code}+{flag_name}', w, f'{code} and XLA_FLAGS={flags}', flags)
    for w, code in (('cnn', 'im2col'), ('cnn', 'guard_no_param_norm'),
                    ('gan', 'matmul_g_only'), ('gan', 'matmul_convs'))
    for flag_name, flags in XLA_FLAG_SETS[2:3]]
PROBES_BY_NAME = {p.name: p for p in PROBES}


def plain_train_step(task, tx):
  """The minimum a train step must do, to price the framework's extras."""

  def train_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    grads, metrics = jax.grad(task.loss_and_metrics, has_aux=True)(
        state.params, batch, rng, True)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1,
                         params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics

  return train_step


def guard_variant_step(task, tx, *, param_norm: bool, where: bool,
                       updates_norm: bool = False):
  """`bigml_jax.training.step.make_train_step` (no microbatches, no pmap)
  with parts of its non-finite guard left out (or the updated parameters'
  norm replaced by the updates' norm), to price each part."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from bigml_jax.tasks.base import NO_STEP  # pylint: disable=g-import-not-at-top

  def train_step(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    grads, metrics = jax.grad(task.loss_and_metrics, has_aux=True)(
        state.params, batch, rng, True)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(metrics['loss_sum'])
    if param_norm:
      finite &= jnp.isfinite(optax.tree.norm(params))
    if updates_norm:
      finite &= jnp.isfinite(optax.tree.norm(updates))
    if where:
      keep = lambda new, old: jax.tree.map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      params, opt_state = (keep(params, state.params),
                           keep(opt_state, state.opt_state))
    metrics = dict(
        metrics, grad_norm_sum=jnp.where(finite, grad_norm, 0.0),
        steps=jnp.ones((), jnp.float32),
        nonfinite=(~finite).astype(jnp.float32),
        min_nonfinite_step=jnp.where(finite, NO_STEP, state.step + 1))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  return train_step


def _variant(probe: Probe):
  """(task, tx, train_step or None) for a probe that changes code."""
  from bigml_jax.tasks import ClassificationTask  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_workloads  # pylint: disable=g-import-not-at-top
  w = WORKLOADS[probe.workload]
  task, tx = jax_workloads.make_task_and_optimizer(w)
  kind = probe.name.split('/')[1].split('+')[0]
  if kind == 'plain_step':
    return task, tx, plain_train_step(task, tx)
  if kind.startswith('guard_'):
    return task, tx, guard_variant_step(
        task, tx, param_norm=kind == 'guard_no_where',
        where=kind != 'guard_no_where',
        updates_norm=kind == 'guard_updates_norm')
  if probe.workload == 'cnn':
    conv = {'im2col': 'im2col', 'patches': 'patches'}.get(kind, 'lax')
    pool = 'reduce_window' if kind == 'reduce_window_pool' else 'reshape'
    model = cpu_layers.CNN((32, 64), (128,), w.num_classes, conv, pool)
    return ClassificationTask(model), tx, None
  if probe.workload == 'gan':
    g = cpu_layers.DCGANGenerator(w.inputs, GAN['latent_dim'],
                                  GAN['g_channels'], impl='matmul')
    d_impl = 'im2col' if kind == 'matmul_convs' else 'lax'
    d = cpu_layers.DCGANDiscriminator(GAN['d_channels'], impl=d_impl)
    return dataclasses.replace(task, generator=g, discriminator=d), tx, None
  if kind in ('xla_attention', 'fused_qkv_xla'):
    task = dataclasses.replace(task,
                               model=task.model.clone(attention_impl='xla'))
  if kind.startswith('fused_qkv'):
    # The framework's blocks look MultiHeadAttention up in their module's
    # globals at call time: swapping it there (in this process only) runs the
    # framework's transformer with the fused projection.
    from bigml_jax.models import transformer  # pylint: disable=g-import-not-at-top
    transformer.MultiHeadAttention = cpu_layers.FusedQKVAttention
  if kind in ('xla_attention', 'fused_qkv', 'fused_qkv_xla'):
    return task, tx, None
  raise ValueError(probe.name)


def measure_probe(spec: str, *, windows: int = 5, window_s: float = 1.0
                  ) -> dict:
  """A code probe and its unchanged workload, built in this process and
  timed in interleaved windows (timing.measure_pair)."""
  from benchmarks import jax_harness, jax_workloads  # pylint: disable=g-import-not-at-top
  probe = PROBES_BY_NAME[spec]
  w = WORKLOADS[probe.workload]
  task, tx, train_step = _variant(probe)
  variant = jax_harness.build(task, tx, w.batch(0), train_step=train_step)
  runs = [jax_harness.Runner(b) for b in (
      jax_workloads.build_workload(probe.workload), variant)]
  stats = timing.measure_pair(*runs, examples_per_step=w.batch_size,
                              windows=windows, window_s=window_s)
  return {'side': 'probe', 'workload': spec,
          'baseline': stats['a_examples_per_sec'],
          'examples_per_sec': stats['b_examples_per_sec'],
          'gain': stats['gain'], 'loss': runs[1].loss(),
          'baseline_loss': runs[0].loss(),
          'compile_s': runs[1].compile_s,
          'baseline_compile_s': runs[0].compile_s}


def startup(names: list[str], *, windows: int, window_s: float) -> list[dict]:
  """Compile time without, then with a cold and a warm persistent
  compilation cache (jax_compilation_cache_dir), each in a fresh process."""
  import tempfile  # pylint: disable=g-import-not-at-top
  rows = []
  for name in names:
    with tempfile.TemporaryDirectory() as cache:
      env = {'JAX_COMPILATION_CACHE_DIR': cache,
             'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
             'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
      times = [run_lib.run_isolated('bigml_jax', name, windows=windows,
                                    window_s=window_s, env=e)['compile_s']
               for e in ({}, env, env)]
    rows.append({'workload': name, 'compile_s': times[0],
                 'cache_cold_s': times[1], 'cache_warm_s': times[2]})
    print(f'{name}: compile {times[0]:.2f} s, cold cache {times[1]:.2f} s, '
          f'warm cache {times[2]:.2f} s', flush=True)
  return rows


def startup_table(rows: list[dict]) -> str:
  lines = ['| workload | compile s | with cache, cold | with cache, warm |',
           '|---|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['workload']} | {r['compile_s']:.2f} | "
                 f"{r['cache_cold_s']:.2f} | {r['cache_warm_s']:.2f} |")
  return '\n'.join(lines)


def table(rows: list[dict]) -> str:
  lines = ['| probe | what | baseline ex/s | probe ex/s | gain |',
           '|---|---|---:|---:|---:|']
  for r in rows:
    if r.get('error'):
      lines.append(f"| {r['probe']} | {r['what']} | - | failed: "
                   f"{r['error'][:120]} | - |")
      continue
    lines.append(f"| {r['probe']} | {r['what']} | {r['baseline']:,.0f} | "
                 f"{r['examples_per_sec']:,.0f} | {r['gain']:.2f}x |")
  return '\n'.join(lines)


def _is_flags_only(probe: Probe) -> bool:
  return probe.name.split('/')[1] in dict(XLA_FLAG_SETS)


def _measure(probe: Probe, *, windows: int, window_s: float) -> dict:
  if not probe.xla_flags:
    return run_lib.run_isolated('probe', probe.name, windows=windows,
                                window_s=window_s)
  # Flags are per process: the unchanged workload without them, in a fresh
  # process next to it, is the baseline.
  base = run_lib.run_isolated('bigml_jax', probe.workload, windows=windows,
                              window_s=window_s)
  env = {'XLA_FLAGS': probe.xla_flags}
  if _is_flags_only(probe):
    result = run_lib.run_isolated('bigml_jax', probe.workload,
                                  windows=windows, window_s=window_s, env=env)
  else:  # Code changes too: the variant's side of the probe child's pair.
    result = run_lib.run_isolated('probe', probe.name, windows=windows,
                                  window_s=window_s, env=env)
  return dict(result, baseline=base['examples_per_sec'],
              gain=result['examples_per_sec'] / base['examples_per_sec'])


def _selected(probe: Probe, only: str | None) -> bool:
  if only == 'code':
    return not probe.xla_flags
  if only == 'flags':
    return bool(probe.xla_flags)
  return not only or (only != 'startup' and only in probe.name)


def run(*, windows: int, window_s: float, names: list[str] | None = None,
        only: str | None = None) -> dict:
  """The probes of the workloads `names` (default: all) selected by `only`:
  'code', 'flags', 'startup' (compile times only) or a part of their names;
  all of them and the startup table by default."""
  rows = []
  for probe in PROBES:
    if (names and probe.workload not in names) or not _selected(probe, only):
      continue
    try:
      result = _measure(probe, windows=windows, window_s=window_s)
    except RuntimeError as e:  # E.g. an XLA flag that breaks compilation.
      error = str(e).strip().splitlines()[-1]
      result = {'error': error, 'baseline': None, 'examples_per_sec': None,
                'gain': None}
    rows.append(dict(result, probe=probe.name, what=probe.what))
    print(table(rows[-1:]).splitlines()[-1], flush=True)
  start = []
  if not only or only == 'startup':
    start = startup(names or list(WORKLOADS), windows=1, window_s=0.1)
  return {'rows': rows, 'startup': start,
          'table': '\n\n'.join(t for t in (
              table(rows) if rows else '',
              startup_table(start) if start else '') if t)}
