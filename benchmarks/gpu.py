"""--suite gpu: a GPT-style decoder (~124M) and a BERT-style encoder, bf16.

Reports tokens/s and MFU against the device's peak
(bigml_jax.training.perf.PEAK_FLOPS). MFU is given twice: from XLA's FLOP
count of the compiled step (perf.compile_and_report; it misses FLOPs inside
custom calls such as cuDNN's fused attention) and from the model-FLOPs
formula of PaLM (Chowdhery et al., 2022, app. B):
6 N + 12 n_layers d_model L per token, N the parameters in matmuls (all but
the position table).

GPU images carry jax, flax, optax, orbax, chex, einops and absl but not
grain, tensorflow_datasets or ml_collections, so this suite imports only the
models, the tasks it times, the train step, perf and the mesh, lazily, and
`blocked_import_chain()` checks in a fresh process that none of them pulls
in those three.

  python -m benchmarks.run --suite gpu           # on the GPU
  python -m benchmarks.run --suite gpu --smoke   # tiny sizes, any device
  bash benchmarks/gpu_session.sh                 # the device check, whole

Data parallel over every visible device. Device time is scarce, so one run
measures a few variants (VARIANTS: global batch and attention kernel) and a
variant that fails (out of memory, a kernel the device lacks) is reported
as a row with its error while the others still run. Batches are rounded up
to a multiple of the devices; without a GPU, cuDNN attention becomes XLA's.
"""

import gc
import os
import subprocess
import sys
import time
import traceback

from benchmarks import timing

BLOCKED = ('grain', 'tensorflow_datasets', 'ml_collections')
GPU_IMPORTS = ('bigml_jax.models.transformer', 'bigml_jax.tasks.lm',
               'bigml_jax.tasks.classification', 'bigml_jax.training.step',
               'bigml_jax.training.perf', 'bigml_jax.parallel.mesh')

# GPT-2 small's shape with the vocabulary padded to a multiple of 128.
GPT = dict(vocab_size=50304, num_layers=12, d_model=768, num_heads=12,
           mlp_dim=3072, max_len=1024)
BERT = dict(vocab_size=30528, num_layers=12, d_model=768, num_heads=12,
            mlp_dim=3072, max_len=512)
SIZES = {'gpt': GPT, 'bert': BERT}
# (model, global batch, attention): the headline first (GPT-2's 32 x 1024
# and BERT's 64 x 512), then what most often moves MFU on one GPU: twice
# the tokens per step, and XLA's own attention against cuDNN's fused one.
VARIANTS = (('gpt', 32, 'cudnn'), ('bert', 64, 'cudnn'), ('gpt', 64, 'cudnn'),
            ('gpt', 32, 'xla'))
SMOKE = dict(vocab_size=512, num_layers=2, d_model=64, num_heads=2,
             mlp_dim=128, max_len=64)
SMOKE_VARIANTS = (('gpt', 4, 'cudnn'), ('bert', 4, 'cudnn'))

_BLOCKER = f'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in {BLOCKED!r}:
      raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
for m in {GPU_IMPORTS!r}:
  __import__(m)
'''


def blocked_import_chain() -> str | None:
  """None if the gpu suite's imports work without grain, tensorflow_datasets
  and ml_collections; else the import chain that needs one of them."""
  proc = subprocess.run([sys.executable, '-c', _BLOCKER], capture_output=True,
                        text=True, check=False)
  if proc.returncode == 0:
    return None
  chain = []
  lines = proc.stderr.splitlines()
  for i, line in enumerate(lines):
    line = line.strip()
    if line.startswith('File "') and '/bigml_jax/' in line:
      path = line.split('"')[1]
      where = path[path.rindex('/bigml_jax/') + 1:]
      number = line.split('line ')[1].split(',')[0]
      code = lines[i + 1].strip() if i + 1 < len(lines) else ''
      chain.append(f'{where}:{number} ({code})')
  blocked = next((l.split('blocked: ')[1] for l in reversed(lines)
                  if 'blocked: ' in l), '?')
  return ' -> '.join(chain + [blocked])


def _task(kind: str, size: dict, dtype: str, attention: str):
  from bigml_jax.models.transformer import BertClassifier, GPTLM  # pylint: disable=g-import-not-at-top
  from bigml_jax.tasks.classification import ClassificationTask  # pylint: disable=g-import-not-at-top
  from bigml_jax.tasks.lm import LMTask  # pylint: disable=g-import-not-at-top
  shape = {k: size[k] for k in ('vocab_size', 'num_layers', 'd_model',
                                'num_heads', 'mlp_dim', 'max_len')}
  if kind == 'gpt':
    model = GPTLM(**shape, dropout_rate=0.0, attention_impl=attention,
                  dtype=dtype)
    return LMTask(model, input_key='tokens')
  model = BertClassifier(**shape, num_classes=2, pooling='cls',
                         dropout_rate=0.0, attention_impl=attention,
                         dtype=dtype)
  return ClassificationTask(model, input_key='tokens')


def measure(kind: str, size: dict, batch: int, attention: str, *,
            windows: int, window_s: float) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from bigml_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from bigml_jax.training import perf  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_harness  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  task = _task(kind, size, 'bfloat16', attention)
  # The batch is split over every device: a multiple of their number.
  n = len(jax.devices())
  b, length = -(-batch // n) * n, size['max_len']
  rng = np.random.default_rng(0)
  if kind == 'gpt':
    batch = {'tokens': rng.integers(1, size['vocab_size'], (b, length + 1),
                                    dtype=np.int32)}
  else:
    batch = {'tokens': rng.integers(1, size['vocab_size'], (b, length),
                                    dtype=np.int32),
             'label': rng.integers(0, 2, (b,), dtype=np.int32)}
  mesh = mesh_lib.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  tx = optax.adamw(3e-4, b1=0.9, b2=0.95, weight_decay=0.1)
  bench = jax_harness.build(task, tx, batch, mesh=mesh)

  start = time.perf_counter()
  compiled, xla_flops = perf.compile_and_report(bench.step, bench.state,
                                                bench.batch)
  compile_s = time.perf_counter() - start
  state = bench.state

  def run(n):
    nonlocal state
    for _ in range(n):
      state, metrics = compiled(state, bench.batch)
    jax.block_until_ready((state, metrics))

  stats = timing.measure(run, examples_per_step=b * length, windows=windows,
                         window_s=window_s)
  steps_per_s = stats['examples_per_sec'] / (b * length)
  position_params = size['max_len'] * size['d_model']
  matmul_params = bench.num_params - position_params
  model_flops = (6 * matmul_params + 12 * size['num_layers'] *
                 size['d_model'] * length) * b * length
  peak = perf.peak_flops_per_device(device)
  mfu = lambda flops: flops * steps_per_s / (peak * n) if flops and peak else None
  memory = device.memory_stats() or {}
  return {'model': kind, 'device': device.device_kind, 'devices': n,
          'attention': attention, 'batch': b, 'length': length,
          'num_params': bench.num_params, 'compile_s': compile_s,
          'tokens_per_sec': stats['examples_per_sec'],
          'tokens_per_sec_per_device': stats['examples_per_sec'] / n,
          'steps_per_window': stats['steps_per_window'],
          'xla_flops_per_step': xla_flops and xla_flops * n,
          'model_flops_per_step': model_flops, 'peak_flops': peak,
          'mfu_xla': mfu(xla_flops and xla_flops * n),
          'mfu_model': mfu(model_flops),
          'peak_memory_gb': memory.get('peak_bytes_in_use', 0) / 1e9 or None}


def table(rows: list[dict]) -> str:
  pct = lambda x: '-' if x is None else f'{100 * x:.1f}%'
  lines = ['| model | device | params | batch x len | attention | tokens/s | '
           'MFU (model FLOPs) | MFU (XLA FLOPs) | compile s | peak mem GB |',
           '|---|---|---:|---|---|---:|---:|---:|---:|---:|']
  for r in rows:
    params = f"{r['num_params'] / 1e6:.1f}M" if 'num_params' in r else '-'
    head = (f"| {r['model']} | {r['device']} | {params} | "
            f"{r['batch']} x {r['length']} | {r['attention']} | ")
    if 'error' in r:
      lines.append(head + f"failed: {r['error']} | | | | |")
      continue
    mem = r['peak_memory_gb']
    lines.append(
        head + f"{r['tokens_per_sec']:,.0f} | {pct(r['mfu_model'])} | "
        f"{pct(r['mfu_xla'])} | {r['compile_s']:.1f} | "
        f"{'-' if mem is None else f'{mem:.1f}'} |")
  return '\n'.join(lines)


def _variant(kind: str, size: dict, batch: int, attention: str, *,
             windows: int, window_s: float) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  if attention == 'cudnn' and jax.default_backend() != 'gpu':
    attention = 'xla'
  try:
    return measure(kind, size, batch, attention, windows=windows,
                   window_s=window_s)
  except Exception as e:  # pylint: disable=broad-except
    # One variant out of memory must not cost the others their device time;
    # the whole traceback goes to the log, a line of it to the table.
    traceback.print_exc()
    error = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
    return {'model': kind, 'device': jax.devices()[0].device_kind,
            'devices': len(jax.devices()), 'batch': batch,
            'length': size['max_len'], 'attention': attention, 'error': error}
  finally:
    gc.collect()  # The last variant's state and step leave device memory.


def run(*, smoke: bool = False, windows: int = 5,
        window_s: float = 2.0) -> dict:
  chain = blocked_import_chain()
  if chain:
    print('warning: the gpu suite needs a module GPU images lack: ' + chain,
          file=sys.stderr)
  if smoke:
    windows, window_s = 2, 0.2
  rows = []
  for kind, batch, attention in SMOKE_VARIANTS if smoke else VARIANTS:
    size = SMOKE if smoke else SIZES[kind]
    rows.append(_variant(kind, size, batch, attention, windows=windows,
                         window_s=window_s))
    print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
  return {'rows': rows, 'table': table(rows), 'blocked_import_chain': chain,
          'smoke': smoke, 'xla_flags': os.environ.get('XLA_FLAGS', '')}
