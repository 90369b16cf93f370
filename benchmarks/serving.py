"""Serving: the HTTP server against the same model called in-process.

  python -m benchmarks.serving --model=EXPORT_DIR [--concurrency 1,8,64]

EXPORT_DIR is an artifact of `python -m experiments.export`. For each
concurrency c it measures
  in-process: the artifact's compiled function (jit) on batches of c rows,
    called back to back: rows/s and the latency of one call;
  server, batching on: `python -m experiments.serve` (max_batch 64,
    --max_wait_ms, default 0 as the server's) in its own process, c clients (keep-alive connections of
    a minimal asyncio client in this process) each sending one request
    after another: requests/s and p50/p99 latency;
  server, batching off: the same with max_batch 1.
A classifier's request carries one image (nested lists) or one text; a
generator's one prompt, continued by --max_new_tokens tokens at
temperature 1 (the run may stop earlier at EOS, which all three share).
The goal: at concurrency 64, batching on reaches at least 70% of the
in-process rows/s at batch 64. The machine's load average is printed before
and after: on a shared machine, rerun when it is quiet.
"""

import os
import sys

from bigml_jax import host

if __name__ == '__main__' and not os.environ.get('BIGML_JAX_SERVE_RESTARTED'):
  # Huge pages for XLA:CPU, as experiments.serve runs with: the in-process
  # side must run as the server does (its children inherit the setting).
  _ENVIRON = host.environ_for_run(os.environ)
  if _ENVIRON is not None:
    _ENVIRON['BIGML_JAX_SERVE_RESTARTED'] = '1'
    os.execve(sys.executable, sys.orig_argv, _ENVIRON)

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import asyncio
import json
import platform
import re
import subprocess
import threading
import time
import urllib.request

import jax
import numpy as np

from bigml_jax.serving import artifact

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TEXT = 'Anything that can go wrong will go wrong.'
_PROMPT = 'And God said'


def request_for(model, max_new_tokens: int) -> tuple[str, dict]:
  """One request's endpoint and body."""
  if model.kind == 'generator':
    return '/v1/generate', {'prompt': _PROMPT, 'temperature': 1.0,
                            'max_new_tokens': max_new_tokens}
  spec = model.manifest['input']
  if spec['kind'] == 'text':
    return '/v1/predict', {'inputs': [_TEXT]}
  image = np.random.default_rng(0).integers(0, 256, spec['shape'])
  return '/v1/predict', {'inputs': [image.tolist()]}


def in_process(model, batch: int, max_new_tokens: int, *,
               seconds: float) -> dict:
  """Rows/s and seconds per call of the compiled function on `batch` rows,
  with the shapes the server uses."""
  if model.kind == 'generator':
    ids = model.encode_prompt(_PROMPT)
    options = model.options(temperature=1.0, max_new_tokens=max_new_tokens)
    rest = model.limits['max_prompt_tokens']
    call = lambda i: model.generate_ids(
        [ids] * batch, [dict(options, seed=i)] * batch, prefill=1, rest=rest)
  else:
    _, body = request_for(model, max_new_tokens)
    rows = [model.preprocess_one(body['inputs'][0])] * batch
    call = lambda i: model.logits(model.batch(rows))
  call(0)  # Compiles.
  calls, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or calls < 3:
    call(calls)
    calls += 1
  elapsed = time.perf_counter() - start
  return {'rows_per_s': calls * batch / elapsed, 'call_s': elapsed / calls}


class Server:
  """`python -m experiments.serve` in a child process, on a free port."""

  def __init__(self, model_dir: str, max_batch: int, max_wait_ms: float):
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'experiments.serve', f'--model={model_dir}',
         '--port=0', f'--max_batch={max_batch}',
         f'--max_wait_ms={max_wait_ms}', f'--max_queue={max(256, max_batch)}'],
        cwd=_ROOT, stderr=subprocess.PIPE, text=True)
    for line in self.proc.stderr:
      found = re.search(r'serving .* on (http://[\d.]+:\d+);', line)
      if found:
        self.url = found.group(1)
        break
    else:
      raise RuntimeError('the server exited without listening')
    # Its later log lines must not fill the pipe and stall it.
    threading.Thread(target=self.proc.stderr.read, daemon=True).start()

  def close(self) -> None:
    self.proc.terminate()
    self.proc.communicate(timeout=60)


async def _client(host: str, port: int, request: bytes, count, latencies):
  """One keep-alive connection sending `request` until `count` runs out.

  A minimal HTTP/1.1 client on asyncio streams: httpx's own cost, in this
  process on the same cores, capped the measured rate (62 requests/s at 64
  connections where this client measured 1,215 from the same server)."""
  reader, writer = await asyncio.open_connection(host, port)
  try:
    while next(count, None) is not None:
      start = time.perf_counter()
      writer.write(request)
      head = await reader.readuntil(b'\r\n\r\n')
      status = head.split(b' ', 2)[1]
      length = int(re.search(rb'(?i)content-length: *(\d+)', head).group(1))
      body = await reader.readexactly(length)
      latencies.append(time.perf_counter() - start)
      if status != b'200':
        raise RuntimeError(f'{status.decode()}: {body.decode()}')
  finally:
    writer.close()


async def drive(url: str, path: str, body: dict, concurrency: int,
                requests: int) -> dict:
  """`requests` POSTs of `body` to url + path over `concurrency`
  connections: requests/s and p50/p99 latency (ms)."""
  host, port = url.split('//')[1].rsplit(':', 1)
  data = json.dumps(body).encode()
  request = (f'POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: '
             f'application/json\r\nContent-Length: {len(data)}\r\n\r\n'
             ).encode() + data
  latencies = []
  # Warm-up: every connection opened and used once.
  warm = iter(range(concurrency))
  await asyncio.gather(*[_client(host, int(port), request, warm, [])
                         for _ in range(concurrency)])
  count = iter(range(requests))
  start = time.perf_counter()
  await asyncio.gather(*[_client(host, int(port), request, count, latencies)
                         for _ in range(concurrency)])
  elapsed = time.perf_counter() - start
  latencies = np.array(latencies) * 1000
  return {'requests_per_s': len(latencies) / elapsed,
          'p50_ms': float(np.percentile(latencies, 50)),
          'p99_ms': float(np.percentile(latencies, 99))}


def over_http(model_dir: str, path: str, body: dict,
              levels: list[tuple[int, int]], *, max_batch: int,
              max_wait_ms: float) -> list[dict]:
  """One server, measured at each (concurrency, requests) in turn; with
  the mean rows per batch it ran (warm-up included), from /v1/model."""
  server = Server(model_dir, max_batch, max_wait_ms)
  results, before = [], {'rows': 0, 'batches': 0}
  try:
    for c, n in levels:
      result = asyncio.run(drive(server.url, path, body, c, n))
      with urllib.request.urlopen(server.url + '/v1/model') as response:
        stats = json.load(response)['batching']
      result['rows_per_batch'] = ((stats['rows'] - before['rows']) /
                                  (stats['batches'] - before['batches']))
      results.append(result)
      before = stats
  finally:
    server.close()
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', required=True)
  parser.add_argument('--concurrency', default='1,8,64')
  parser.add_argument('--requests', type=int, default=None,
                      help='Requests per measurement (default: 40 per client '
                      'for classifiers, 4 for generators, at least 200/20).')
  parser.add_argument('--max_new_tokens', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=5.0,
                      help='In-process timing per batch size.')
  parser.add_argument('--max_wait_ms', type=float, default=0.0)
  args = parser.parse_args()
  model = artifact.load(args.model)
  path, body = request_for(model, args.max_new_tokens)
  print(f'load average before: {os.getloadavg()[0]:.1f}; GLIBC_TUNABLES='
        f'{os.environ.get("GLIBC_TUNABLES", "")}')
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} '
        f'CPUs, {jax.devices()[0].device_kind}, jax {jax.__version__}; '
        f'{args.model} ({model.kind}, {model.manifest["model"]})')
  print('| concurrency | in-process rows/s (ms per call) | batching on: '
        'req/s, p50 / p99 ms (rows per batch) | batching off: req/s, p50 / '
        'p99 ms | on / in-process |')
  print('|---:|---:|---:|---:|---:|')
  generator = model.kind == 'generator'
  levels = [(c, args.requests or max(c * (4 if generator else 40),
                                     20 if generator else 200))
            for c in map(int, args.concurrency.split(','))]
  local = [in_process(model, c, args.max_new_tokens, seconds=args.seconds)
           for c, _ in levels]
  on = over_http(args.model, path, body, levels, max_batch=64,
                 max_wait_ms=args.max_wait_ms)
  off = over_http(args.model, path, body, levels, max_batch=1, max_wait_ms=0)
  for (c, _), l, a, b in zip(levels, local, on, off):
    print(f'| {c} | {l["rows_per_s"]:,.0f} ({l["call_s"] * 1000:.1f}) | '
          f'{a["requests_per_s"]:,.0f}, {a["p50_ms"]:.1f} / {a["p99_ms"]:.1f} '
          f'({a["rows_per_batch"]:.1f}) | {b["requests_per_s"]:,.0f}, '
          f'{b["p50_ms"]:.1f} / {b["p99_ms"]:.1f} | '
          f'{a["requests_per_s"] / l["rows_per_s"]:.0%} |')
  print(f'load average after: {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  main()
