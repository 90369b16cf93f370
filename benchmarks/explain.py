"""Attribution cost: integrated gradients against one forward+backward.

  python -m benchmarks.explain [--batch 32] [--steps 64]

The model is the default experiment's CNN (conv 32, 64; dense 128) on a
batch of real digits. One forward+backward is `explain.saliency` (the
gradient of the target logits with respect to the images); integrated
gradients evaluates that gradient at --steps points of the path per image,
all in one call (one batch of batch * steps images) or each of
--steps_per_batch points per image per call. The table reports the median
of timed windows (benchmarks/timing.py, windows interleaved) in seconds per
call and the ratio to one forward+backward.
"""

import argparse
import functools
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from sklearn.datasets import load_digits

from bigml_jax import explain
from bigml_jax.models import build_model
from experiments.configs import default

from benchmarks import timing


def _compiled(fn, *args):
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def measure(batch: int = 32, steps: int = 64,
            steps_per_batch: tuple[int, ...] = (16, 4), *, windows: int = 5,
            window_s: float = 1.0) -> list[dict]:
  """Seconds per call of one forward+backward (saliency) and of integrated
  gradients (all steps in one call, then each of `steps_per_batch`), each
  timed in windows interleaved with the forward+backward's."""
  model = build_model(default.get_config().model, num_classes=10)
  digits = load_digits()
  images = jnp.asarray(digits.images[:batch, ..., None] / 16, jnp.float32)
  target = jnp.asarray(digits.target[:batch], jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), images[:1])['params'])
  apply_fn = lambda p, x: model.apply({'params': p}, x)
  variants = {'forward+backward': functools.partial(explain.saliency,
                                                    apply_fn)}
  for per_call in (steps,) + tuple(steps_per_batch):
    variants[f'integrated gradients, {steps} steps, {per_call} per call'] = (
        functools.partial(explain.integrated_gradients, apply_fn,
                          steps=steps, steps_per_batch=per_call))
  runs = {}
  for name, fn in variants.items():
    compiled, compile_s = _compiled(fn, params, images, target)

    def run(n, compiled=compiled):
      for _ in range(n):
        out = compiled(params, images, target)
      out.block_until_ready()

    runs[name] = (run, compile_s)
  (base_name, (base_run, base_compile_s)), *others = runs.items()
  base = timing.measure(base_run, examples_per_step=1, windows=windows,
                        window_s=window_s)
  rows = [{'name': base_name, 'seconds': 1 / base['examples_per_sec'],
           'ratio': 1.0, 'compile_s': base_compile_s}]
  for name, (run, compile_s) in others:
    stats = timing.measure_pair(base_run, run, examples_per_step=1,
                                windows=windows, window_s=window_s)
    rows.append({'name': name, 'seconds': 1 / stats['b_examples_per_sec'],
                 'ratio': 1 / stats['gain'], 'compile_s': compile_s})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=64)
  parser.add_argument('--steps_per_batch', default='16,4',
                      help='Points per image per call, besides all at once.')
  args = parser.parse_args()
  print(f'{platform.processor() or platform.machine()}, '
        f'{jax.devices()[0].device_kind}, jax {jax.__version__}, '
        f'batch {args.batch}')
  print('| call | ms per call | x one forward+backward | compile s |')
  print('|---|---:|---:|---:|')
  for r in measure(args.batch, args.steps,
                   tuple(map(int, args.steps_per_batch.split(',')))):
    print(f"| {r['name']} | {1000 * r['seconds']:.2f} | {r['ratio']:.1f}x | "
          f"{r['compile_s']:.1f} |", flush=True)


if __name__ == '__main__':
  main()
