"""The benchmark harness computes what it says it times (no speed asserts)."""

import math

import pytest

from benchmarks import gpu, jax_harness, jax_workloads
from benchmarks import run as run_lib
from benchmarks.workloads import WORKLOADS

# Parameter counts of the five workloads, worked out by hand from the layer
# sizes in benchmarks/workloads.py.
EXPECTED_PARAMS = {
    'mlp': 784 * 128 + 128 + 128 * 10 + 10,
    'cnn': (3 * 3 * 3 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (4096 * 128 + 128)
           + (128 * 10 + 10),
    'rnn': 128 * 128 + 128 * 32 + 128 + 128 * 10 + 10,
    'transformer': 8192 * 256 + 128 * 256 + 4 * (
        2 * 2 * 256 + 4 * (256 * 256 + 256) + 256 * 1024 + 1024
        + 1024 * 256 + 256) + 2 * 256 + 256 * 2 + 2,
    'gan': (100 * 6272 + 6272) + (4 * 4 * 128 * 64 + 64) + (4 * 4 * 64 + 1)
           + (4 * 4 * 64 + 64) + (4 * 4 * 64 * 128 + 128) + (6272 + 1),
}


@pytest.mark.parametrize('name', sorted(WORKLOADS))
def test_framework_param_counts(name):
  assert jax_workloads.count_params(name) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize('name', sorted(WORKLOADS))
def test_torch_twins_have_the_same_param_counts(name):
  pytest.importorskip('torch')
  from benchmarks import torch_workloads  # pylint: disable=g-import-not-at-top
  bench = torch_workloads.build_workload(name)
  assert bench.num_params == EXPECTED_PARAMS[name]
  assert math.isfinite(float(bench.step().detach()))


def test_two_framework_steps_are_finite():
  bench = jax_workloads.build_workload('mlp')
  assert bench.num_params == EXPECTED_PARAMS['mlp']
  run = jax_harness.Runner(bench)
  run(2)
  assert int(run.state.step) == 2
  assert math.isfinite(run.loss())


def test_measure_reports_finite_rates():
  result = run_lib.measure_jax('rnn', windows=2, window_s=0.05)
  assert result['num_params'] == EXPECTED_PARAMS['rnn']
  assert result['windows'] == 2
  assert 0 < result['examples_per_sec'] < math.inf
  assert math.isfinite(result['loss'])
  assert result['compile_s'] > 0 and result['peak_rss_mb'] > 0


def test_child_process_protocol():
  result = run_lib.run_isolated('bigml_jax', 'mlp', windows=1, window_s=0.05)
  assert result['workload'] == 'mlp'
  assert result['num_params'] == EXPECTED_PARAMS['mlp']
  assert 0 < result['examples_per_sec'] < math.inf


def test_gpu_suite_imports_need_no_data_or_config_packages():
  assert gpu.blocked_import_chain() is None


def test_gpu_suite_command_runs_without_data_or_config_packages(tmp_path):
  """The command a GPU machine runs, end to end at smoke size, in a Python
  where grain, TFDS and ml_collections cannot be imported (GPU images lack
  them): device time is too scarce to find an import error there."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'gpu.json'
  code = gpu._BLOCKER.split('for m in')[0] + (  # pylint: disable=protected-access
      'import runpy\n'
      f"sys.argv = ['benchmarks.run', '--suite', 'gpu', '--smoke', "
      f"'--json', {str(out)!r}]\n"
      "runpy.run_module('benchmarks.run', run_name='__main__')\n")
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, check=False, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'needs a module GPU images lack' not in proc.stderr
  rows = json.loads(out.read_text())['rows']
  assert [r['model'] for r in rows] == ['gpt', 'bert']
  for r in rows:
    assert r['tokens_per_sec'] > 0 and r['num_params'] > 0
    assert r['batch'] == 8 and r['devices'] == 8  # SMOKE's 4, rounded up.


def test_gpu_suite_reports_a_failed_variant_and_goes_on():
  row = gpu._variant('gpt', gpu.SMOKE, 4, 'flash', windows=1, window_s=0.01)  # pylint: disable=protected-access
  assert row['error'].startswith('ConfigError: attention implementation '
                                 "'flash' is")
  line = gpu.table([row]).splitlines()[-1]
  assert line.startswith('| gpt | ') and '| 4 x 64 | flash | failed: ' in line


def test_overhead_loop_side_runs_whole_calls():
  """The overhead suite's loop side: log windows rounded up to whole calls
  of `steps_per_dispatch` steps, and a loss that is the loop's own."""
  # In its own process, as the suite runs it: the workload's mesh is one
  # device, not the tests' eight.
  result = run_lib.run_isolated('loop', 'mlp', windows=2, window_s=0.1,
                                steps=3, steps_per_dispatch=2,
                                env={'XLA_FLAGS': ''})
  assert result['steps_per_window'] == 4 and result['steps_per_dispatch'] == 2
  assert result['examples_per_sec'] > 0
  assert math.isfinite(result['loss']) and 0 < result['loss'] < 10


def test_sampling_benchmark_reports_both_paths():
  from benchmarks import sampling  # pylint: disable=g-import-not-at-top
  r = sampling.measure(16, 2, d_model=16, num_layers=1, windows=1,
                       window_s=0.05)
  assert r['cached_tokens_per_sec'] > 0 and r['uncached_tokens_per_sec'] > 0
  assert set(r['compile_s']) == {'cached', 'uncached'}
