"""Text generation: tokens/s of `sampling.generate` with the GPT's key/value
cache against rerunning the whole sequence for each new token.

  python -m benchmarks.sampling [--sizes 128,512] [--batch 4]

The model is `gpt_kjv.py`'s (4 layers, d_model 128, 4 heads, MLP 512, a
character vocabulary of 80) at max_len = each size; each call starts from
one EOS and draws size - 1 tokens at temperature 1. Both paths draw the same
tokens (tests/models/test_sampling.py); the table reports the median of
timed windows (benchmarks/timing.py, windows interleaved) and the ratio.
"""

import argparse
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.models import build_model, sampling

from benchmarks import timing


class _Uncached:
  """The same model without a `decode` attribute: generate reruns it."""

  def __init__(self, model):
    self.apply, self.max_len = model.apply, model.max_len


def measure(size: int, batch: int, *, d_model: int = 128, num_layers: int = 4,
            windows: int = 3, window_s: float = 1.0) -> dict:
  model = build_model({'name': 'gpt', 'vocab_size': 80, 'num_layers': num_layers,
                       'd_model': d_model, 'num_heads': 4,
                       'mlp_dim': 4 * d_model, 'max_len': size})
  prompt = jnp.ones((batch, 1), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), prompt)['params'])
  runs = {}
  for name, m in (('cached', model), ('uncached', _Uncached(model))):
    jitted = jax.jit(lambda p, r, m=m: sampling.generate(
        m, p, prompt, r, num_tokens=size - 1))
    start = time.perf_counter()
    fn = jitted.lower(params, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - start

    def run(n, fn=fn):
      for i in range(n):
        out = fn(params, jax.random.key(i))
      out.block_until_ready()
    runs[name] = (run, compile_s)
  stats = timing.measure_pair(runs['uncached'][0], runs['cached'][0],
                              examples_per_step=batch * (size - 1),
                              windows=windows, window_s=window_s,
                              warmup_steps=1)
  return {'size': size, 'batch': batch,
          'uncached_tokens_per_sec': stats['a_examples_per_sec'],
          'cached_tokens_per_sec': stats['b_examples_per_sec'],
          'speedup': stats['gain'],
          'compile_s': {k: v[1] for k, v in runs.items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='128,512')
  parser.add_argument('--batch', type=int, default=4)
  args = parser.parse_args()
  print(f'{platform.processor() or platform.machine()}, '
        f'{jax.devices()[0].device_kind}, jax {jax.__version__}')
  print('| max_len | batch | cached tokens/s | uncached tokens/s | speed-up | '
        'compile s (cached / uncached) |')
  print('|---:|---:|---:|---:|---:|---|')
  for size in map(int, args.sizes.split(',')):
    r = measure(size, args.batch)
    print(f"| {size} | {r['batch']} | {r['cached_tokens_per_sec']:,.0f} | "
          f"{r['uncached_tokens_per_sec']:,.0f} | {r['speedup']:.1f}x | "
          f"{r['compile_s']['cached']:.1f} / "
          f"{r['compile_s']['uncached']:.1f} |", flush=True)


if __name__ == '__main__':
  main()
