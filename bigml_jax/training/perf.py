"""What a step costs: compiled memory, FLOPs, throughput and MFU; and the
settings that make it cost less.

MFU = (FLOPs per step per device, from XLA's cost analysis of the compiled,
partitioned step) x steps/s / (the device's peak FLOP/s). Peaks are dense
bf16 figures from the vendors' data sheets; unknown devices (CPUs) get no MFU.
"""

import ctypes
import importlib.metadata
import importlib.util
import platform

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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Free memory past this much at the heap's top goes back to the OS; it is
# the largest value mallopt's int takes.
_TRIM_THRESHOLD = 2**31 - 1


def reuse_host_memory() -> bool:
  """Makes glibc's malloc keep freed memory for the next step to reuse.

  XLA:CPU allocates a step's temporaries afresh on every execution. glibc
  maps blocks over 32 MB (over 64 MB in a thread's own arena) straight from
  the OS and unmaps them on free, so every step faults its temporaries back
  in, a 4 KB page at a time: 56 MB per step of the CNN benchmark and 584 MB
  of the transformer's, a quarter of their step time on a 2-core CPU
  (benchmarks/NOTES.md). After this call every block comes from one heap
  (no mmap, one arena), and free memory goes back to the OS only past 2 GB
  at the heap's top. The price is resident memory: blocks of steps
  dispatched ahead stay mapped (the transformer benchmark's peak RSS went
  from 1.2 to 2.2-3.5 GB).

  Call it before jax creates its CPU backend: a thread that has allocated
  keeps the arena it has. A no-op (False) where the C library is not glibc.
  """
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return False
  mallopt = ctypes.CDLL('libc.so.6').mallopt
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1),
      (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))


def cpu_backend_expected() -> bool:
  """Whether jax will run on the CPU, judged without creating a backend
  (which would be too late for `reuse_host_memory`): the first of
  JAX_PLATFORMS when set, else whether no accelerator plugin is installed."""
  if jax.config.jax_platforms:
    return jax.config.jax_platforms.split(',')[0].strip() == 'cpu'
  # jax loads PJRT plugins (CUDA, ROCm, ...) from this entry-point group and
  # namespace package, and TPUs through libtpu.
  return not (importlib.metadata.entry_points(group='jax_plugins') or
              importlib.util.find_spec('jax_plugins') or
              importlib.util.find_spec('libtpu'))
