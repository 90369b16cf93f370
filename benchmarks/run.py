"""Speed and memory of bigml_jax, side by side with PyTorch and the hardware.

  python -m benchmarks.run --suite cpu [--workloads mlp,cnn] [--json PATH]
  python -m benchmarks.run --suite overhead   # train_and_evaluate vs bare loop
  python -m benchmarks.run --suite pipeline   # input pipeline vs step
  python -m benchmarks.run --suite gpu [--smoke]

cpu: training examples/s of the five workloads (benchmarks/workloads.py)
through the framework's own jitted train step and, when torch is installed,
through PyTorch eager twins with the same parameter count. Each (workload,
framework) runs in a fresh process, so its peak memory is its own and the two
frameworks' thread pools never share the cores. The gpu suite imports neither
torch nor the data layer (see benchmarks/gpu.py).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

from bigml_jax import host

from benchmarks import timing
from benchmarks.workloads import WORKLOADS

RESULT_PREFIX = 'RESULT '


def measure_jax(name: str, *, windows: int = 5, window_s: float = 1.0) -> dict:
  """The framework's train step for `name` (jax_harness.time_bench)."""
  from benchmarks import jax_harness, jax_workloads  # pylint: disable=g-import-not-at-top

  bench = jax_workloads.build_workload(name)
  stats = jax_harness.time_bench(
      bench, examples_per_step=WORKLOADS[name].batch_size, windows=windows,
      window_s=window_s)
  return dict(stats, side='bigml_jax', workload=name,
              peak_rss_mb=timing.peak_rss_mb())


def measure_torch(name: str, *, windows: int = 5, window_s: float = 1.0) -> dict:
  """The PyTorch eager twin of `name`: examples/s and the last loss."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_workloads  # pylint: disable=g-import-not-at-top

  bench = torch_workloads.build_workload(name)
  loss = None

  def run(n):
    nonlocal loss
    for _ in range(n):
      loss = bench.step()

  first_step_s = timing.timed(lambda: run(1))
  stats = timing.measure(run, examples_per_step=WORKLOADS[name].batch_size,
                         windows=windows, window_s=window_s)
  return dict(stats, side='torch', workload=name, num_params=bench.num_params,
              compile_s=None, first_step_s=first_step_s,
              loss=float(loss.detach()), threads=torch.get_num_threads(),
              peak_rss_mb=timing.peak_rss_mb())


def measure_loop(name: str, *, windows: int = 5, window_s: float = 1.0,
                 steps: int | None = None, steps_per_dispatch: int = 1) -> dict:
  from benchmarks import overhead  # pylint: disable=g-import-not-at-top
  del window_s  # The loop's log windows are `steps` long instead.
  return overhead.measure_loop(name, windows=windows, steps=steps or 10,
                               steps_per_dispatch=steps_per_dispatch)


def measure_fed(name: str, *, windows: int = 5, window_s: float = 1.0) -> dict:
  from benchmarks import overhead  # pylint: disable=g-import-not-at-top
  return overhead.measure_fed(name, windows=windows, window_s=window_s)


MEASURE = {'bigml_jax': measure_jax, 'torch': measure_torch,
           'loop': measure_loop, 'fed': measure_fed}


def run_isolated(side: str, name: str, *, windows: int, window_s: float,
                 steps: int | None = None, env: dict | None = None,
                 steps_per_dispatch: int = 1) -> dict:
  """`MEASURE[side](name)` in a fresh Python process; its result dict."""
  cmd = [sys.executable, '-m', 'benchmarks.run', '--child', side,
         '--workloads', name, '--windows', str(windows),
         '--window-s', str(window_s)]
  if steps:
    cmd += ['--steps', str(steps)]
  if steps_per_dispatch > 1:
    cmd += ['--steps-per-dispatch', str(steps_per_dispatch)]
  environ = dict(os.environ, **(env or {}))
  if side != 'torch':  # The framework as its CLI runs it (bigml_jax/host.py).
    environ = host.environ_for_run(environ) or environ
  proc = subprocess.run(cmd, capture_output=True, text=True, env=environ,
                        check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return json.loads(line[len(RESULT_PREFIX):])
  raise RuntimeError(f'{side} {name} failed (exit {proc.returncode}):\n'
                     f'{proc.stderr[-3000:]}')


def torch_available() -> bool:
  return importlib.util.find_spec('torch') is not None


def environment() -> dict:
  """Machine, load and versions, for the results' header."""
  versions = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'torch', 'numpy'):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      pass
  model = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(l.split(':', 1)[1].strip() for l in f
                   if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  jax_environ = host.environ_for_run(os.environ) or os.environ
  return {'date': time.strftime('%Y-%m-%d %H:%M %Z'), 'cpu': model,
          'cores': os.cpu_count(), 'load_1min': os.getloadavg()[0],
          'python': platform.python_version(), 'versions': versions,
          'glibc': '-'.join(platform.libc_ver()),
          # Those of the jax side's own processes (not the pipeline suite).
          'jax_side_glibc_tunables': jax_environ.get('GLIBC_TUNABLES', '')}


def _fmt(x, spec='.0f', missing='-'):
  return missing if x is None else format(x, spec)


def cpu_table(rows: list[dict]) -> str:
  head = ('| workload | params (jax / torch) | bigml_jax ex/s | torch ex/s | '
          'ratio | jax compile s | peak RSS MB (jax / torch) |\n'
          '|---|---|---:|---:|---:|---:|---:|')
  lines = [head]
  for r in rows:
    j, t = r['bigml_jax'], r.get('torch')
    lines.append(
        f"| {r['workload']} | {j['num_params']:,} / "
        f"{_fmt(t and t['num_params'], ',')} | {j['examples_per_sec']:,.0f} | "
        f"{_fmt(t and t['examples_per_sec'], ',.0f')} | "
        f"{_fmt(r.get('ratio'), '.2f')} | {j['compile_s']:.2f} | "
        f"{j['peak_rss_mb']:.0f} / {_fmt(t and t['peak_rss_mb'])} |")
  return '\n'.join(lines)


def cpu_suite(names: list[str], *, windows: int, window_s: float,
              rounds: int = 1) -> dict:
  """Each workload on each side, `rounds` times in alternation; a side's
  figure is its best round (the one other processes disturbed least)."""
  with_torch = torch_available()
  if not with_torch:
    print('torch is not installed: bigml_jax only '
          "(pip install -e '.[bench]' for the comparison)", file=sys.stderr)
  sides = ('bigml_jax', 'torch') if with_torch else ('bigml_jax',)
  rows = []
  for name in names:
    row = {'workload': name}
    for side in sides:
      row[side + '_rounds'] = []
    for _ in range(rounds):
      for side in sides:
        result = run_isolated(side, name, windows=windows, window_s=window_s)
        row[side + '_rounds'].append(result)
        print(f"{name:12s} {side:9s} {result['examples_per_sec']:10,.0f} ex/s"
              f"  params {result['num_params']:,}", file=sys.stderr)
    for side in sides:
      row[side] = max(row[side + '_rounds'],
                      key=lambda r: r['examples_per_sec'])
    if with_torch:
      row['ratio'] = (row['bigml_jax']['examples_per_sec'] /
                      row['torch']['examples_per_sec'])
    rows.append(row)
  return {'rows': rows, 'table': cpu_table(rows)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--suite', default='cpu',
                      choices=('cpu', 'overhead', 'pipeline', 'gpu'))
  parser.add_argument('--workloads',
                      help='comma-separated, from: ' + ', '.join(WORKLOADS) +
                      ' (default: all)')
  parser.add_argument('--windows', type=int, default=7,
                      help='timed windows per measurement (median reported)')
  parser.add_argument('--window-s', type=float, default=1.0,
                      help='target seconds per timed window')
  parser.add_argument('--rounds', type=int, default=1,
                      help='cpu and overhead suites: measure each side this '
                      'many times, alternating, and keep the best round')
  parser.add_argument('--json', help='also write the results here')
  parser.add_argument('--smoke', action='store_true',
                      help='gpu suite: tiny sizes, to check it runs on CPU')
  parser.add_argument('--child', choices=tuple(MEASURE),
                      help=argparse.SUPPRESS)
  parser.add_argument('--steps', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--steps-per-dispatch', type=int, default=1,
                      help='overhead suite: the loop runs this many steps a '
                      'call (config steps_per_dispatch)')
  args = parser.parse_args(argv)
  if args.child:
    extra = {'steps': args.steps} if args.steps else {}
    if args.steps_per_dispatch > 1:
      extra['steps_per_dispatch'] = args.steps_per_dispatch
    result = MEASURE[args.child](args.workloads, windows=args.windows,
                                 window_s=args.window_s, **extra)
    print(RESULT_PREFIX + json.dumps(result))
    return 0
  names = [n for n in (args.workloads or ','.join(WORKLOADS)).split(',') if n]
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown:
    parser.error(f'unknown workload(s) {", ".join(unknown)}; known: '
                 f'{", ".join(WORKLOADS)}')

  env = environment()
  if args.suite == 'cpu':
    out = cpu_suite(names, windows=args.windows, window_s=args.window_s,
                    rounds=args.rounds)
  elif args.suite == 'overhead':
    from benchmarks import overhead  # pylint: disable=g-import-not-at-top
    out = overhead.run(names, windows=args.windows, window_s=args.window_s,
                       rounds=args.rounds,
                       steps_per_dispatch=args.steps_per_dispatch)
  elif args.suite == 'pipeline':
    from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
    out = input_pipeline.run(windows=args.windows, window_s=args.window_s)
  else:
    from benchmarks import gpu  # pylint: disable=g-import-not-at-top
    out = gpu.run(smoke=args.smoke)
  env['load_1min_end'] = os.getloadavg()[0]
  out = dict(suite=args.suite, environment=env, **out)
  print(f"\n{env['cpu']}, {env['cores']} cores, load {env['load_1min']:.2f} -> "
        f"{env['load_1min_end']:.2f}; "
        + ', '.join(f'{k} {v}' for k, v in env['versions'].items()))
  print(out['table'])
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
