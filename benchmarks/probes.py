"""CPU speed-ups tried on the workloads (issue 7, item 3); see NOTES.md.

Each probe is a workload with one thing changed: a layer implementation
(benchmarks/cpu_layers.py), the attention path, the train step, or XLA flags.
It runs through the same harness as the cpu suite (framework train step,
fresh process, median of timed windows) next to the unchanged workload, so
the ratio between the two is the probe's gain.

  python -m benchmarks.run --suite probes [--workloads cnn,gan] [--json P]
"""

import dataclasses

import flax.linen as nn
import jax
import optax

from benchmarks import cpu_layers, timing
from benchmarks import run as run_lib
from benchmarks.workloads import GAN, TRANSFORMER, WORKLOADS


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
    ('mlp/plain_step', 'mlp', 'value_and_grad + optax update only'),
    ('gan/matmul_convs', 'gan', 'G: transposed convs as matmul + sub-pixel '
     'overlap-add; D: convs as im2col + matmul'),
    ('gan/matmul_g_only', 'gan', 'G: transposed convs as matmul + overlap-add; '
     'D unchanged'),
    ('transformer/xla_attention', 'transformer', "attention_impl='xla' "
     '(jax.nn.dot_product_attention)'),
    ('transformer/plain_step', 'transformer', 'value_and_grad + optax only'),
)] + [Probe(f'{w}/{flag_name}', w, f'XLA_FLAGS={flags}', flags)
      for w in ('cnn', 'transformer', 'gan')
      for flag_name, flags in (
          ('xnn_fusion', '--xla_cpu_experimental_xnn_fusion_type='
           'dot,eltwise,reduce'),
          ('no_xnnpack', '--xla_cpu_use_xnnpack=false'),
          ('onednn', '--xla_cpu_experimental_onednn_custom_call=true'),
          ('vector_512', '--xla_cpu_prefer_vector_width=512'),
      )]
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


def _variant(probe: Probe):
  """(task, tx, train_step or None) for a probe that changes code."""
  from bigml_jax.tasks import ClassificationTask  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_workloads  # pylint: disable=g-import-not-at-top
  w = WORKLOADS[probe.workload]
  task, tx = jax_workloads.make_task_and_optimizer(w)
  kind = probe.name.split('/')[1]
  if kind == 'plain_step':
    return task, tx, plain_train_step(task, tx)
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
  if kind == 'xla_attention':
    model = task.model.clone(attention_impl='xla')
    return dataclasses.replace(task, model=model), tx, None
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


def table(rows: list[dict]) -> str:
  lines = ['| probe | what | baseline ex/s | probe ex/s | gain |',
           '|---|---|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['probe']} | {r['what']} | {r['baseline']:,.0f} | "
                 f"{r['examples_per_sec']:,.0f} | {r['gain']:.2f}x |")
  return '\n'.join(lines)


def run(*, windows: int, window_s: float, names: list[str] | None = None
        ) -> dict:
  """Every probe of the workloads `names` (default: all probes)."""
  rows = []
  for probe in PROBES:
    if names and probe.workload not in names:
      continue
    if probe.xla_flags:  # Flags are per process: a fresh baseline next to it.
      base, result = (run_lib.run_isolated(
          'bigml_jax', probe.workload, windows=windows, window_s=window_s,
          env={'XLA_FLAGS': flags}) for flags in ('', probe.xla_flags))
      result = dict(result, baseline=base['examples_per_sec'],
                    gain=result['examples_per_sec'] / base['examples_per_sec'])
    else:
      result = run_lib.run_isolated('probe', probe.name, windows=windows,
                                    window_s=window_s)
    rows.append(dict(result, probe=probe.name, what=probe.what))
    print(table(rows[-1:]).splitlines()[-1], flush=True)
  return {'rows': rows, 'table': table(rows)}
