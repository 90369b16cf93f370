"""Smoke tests of benchmarks/serving.py and benchmarks/quantization.py."""

import asyncio
import json
import os

import httpx
import pytest

from benchmarks import quantization
from benchmarks import serving as serving_benchmark
from bigml_jax.serving import load, make_app
from tests.serving.test_server import _serving


def test_serving_benchmark_measures_both_sides(cnn_export):
  model = load(cnn_export)
  local = serving_benchmark.in_process(model, 4, 8, seconds=0.05)
  assert local['rows_per_s'] > 0 and local['call_s'] > 0
  path, body = serving_benchmark.request_for(model, 8)
  app = make_app(model, max_batch=4, max_wait_ms=0, batch_sizes=(1, 4))
  with _serving(app) as url:
    r = asyncio.run(serving_benchmark.drive(url, path, body, 4, 20))
    info = httpx.get(url + '/v1/model').json()
  assert r['requests_per_s'] > 0 and 0 < r['p50_ms'] <= r['p99_ms']
  # 4 warm-up requests and 20 measured ones, every one answered.
  assert info['batching']['requests'] == 24


def test_quantization_benchmark_reports_size_and_accuracy(cnn_run, tmp_path):
  row = quantization.measure(cnn_run, str(tmp_path))
  (float_npz, _), (int8_npz, _) = row['sizes']['float32'], row['sizes']['int8']
  assert int8_npz < 0.6 * float_npz
  rows = [json.loads(l) for l in open(os.path.join(cnn_run, 'metrics.jsonl'))]
  assert row['values']['float32'] == pytest.approx(
      [r for r in rows if r['split'] == 'eval'][-1]['accuracy'])
  assert abs(row['values']['int8'] - row['values']['float32']) < 0.05
