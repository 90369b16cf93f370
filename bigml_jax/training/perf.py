"""What a step costs: compiled memory, FLOPs, throughput and MFU; and the
per-compilation options that make it cost less.

MFU = (FLOPs per step per device, from XLA's cost analysis of the compiled,
partitioned step) x steps/s / (the device's peak FLOP/s). Peaks are dense
bf16 figures from the vendors' data sheets; unknown devices (CPUs) get no MFU.
"""

from absl import logging
import jax

# Dense bf16 peak FLOP/s per device (per chip for TPUs).
PEAK_FLOPS = (
    ('TPU v4', 275e12),
    ('TPU v5 lite', 197e12), ('TPU v5e', 197e12),
    ('TPU v5p', 459e12), ('TPU v5', 459e12),
    ('TPU v6 lite', 918e12), ('TPU v6e', 918e12),
    ('A100', 312e12),
    ('H100', 989e12),
    ('H200', 989e12),
)


def peak_flops_per_device(device: jax.Device) -> float | None:
  kind = device.device_kind
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return peak
  return None


# XLA:CPU's YNNPACK fusions over dots and the ops around them ran the CNN's
# convolutions 1.4-1.7x faster than the default but cost the MLP 20%
# (benchmarks/NOTES.md), so only steps with convolutions take them. The list
# replaces the default one, whose YNN reductions ran the CNN's bias
# gradients 8x faster than XLA's own: REDUCE keeps them.
_CPU_CONV_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def compiler_options(lowered) -> dict[str, str] | None:
  """Per-compilation XLA options for a lowered step (None: the defaults)."""
  if (jax.default_backend() == 'cpu' and
      'stablehlo.convolution' in lowered.as_text()):
    return _CPU_CONV_OPTIONS
  return None


def compile_and_report(jitted, *args):
  """Compiles `jitted` for `args` (with `compiler_options`), logs its memory
  analysis; returns the compiled step and its FLOPs per device (None if XLA
  does not say)."""
  lowered = jitted.lower(*args)
  options = compiler_options(lowered)
  try:
    compiled = lowered.compile(options)
  except Exception as e:  # pylint: disable=broad-except
    if not options:
      raise
    # The options are experimental XLA flags: a jaxlib without them should
    # cost speed, not the run. A genuine compile error raises again below.
    logging.warning('compiling without %s: %s', options, e)
    compiled = lowered.compile()
  memory = compiled.memory_analysis()
  if memory is not None:
    logging.info(
        'compiled step per device: arguments %.2f MB, outputs %.2f MB, '
        'temporaries %.2f MB, generated code %.2f MB',
        memory.argument_size_in_bytes / 1e6, memory.output_size_in_bytes / 1e6,
        memory.temp_size_in_bytes / 1e6,
        memory.generated_code_size_in_bytes / 1e6)
  cost = compiled.cost_analysis()
  if isinstance(cost, list):  # Older jax: one dict per module.
    cost = cost[0] if cost else None
  flops = float(cost['flops']) if cost and cost.get('flops', 0) > 0 else None
  return compiled, flops


def throughput(steps_per_sec: float, batch_size: int, num_devices: int,
               flops: float | None, peak: float | None) -> dict[str, float]:
  """Rates for a log line; 'mfu' only when both FLOPs and peak are known."""
  out = {'steps_per_sec': steps_per_sec,
         'examples_per_sec': steps_per_sec * batch_size,
         'examples_per_sec_per_device': steps_per_sec * batch_size / num_devices}
  if flops and peak:
    out['mfu'] = flops * steps_per_sec / peak
  return out
