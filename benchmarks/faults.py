"""The fault matrix: every failure scenario, what must happen, what did.

  python -m benchmarks.faults

Runs tests/test_faults.py and the CLI's user-mistake tests (they are the
scenarios) and prints one row per scenario. Exit code 0 only if all are OK.
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ['tests/test_faults.py',
             'tests/test_run.py::test_user_mistakes_fail_in_one_line',
             'tests/test_run.py::test_missing_config_file',
             'tests/test_run.py::test_config_file_without_get_config']


class _Collect:
  """pytest plugin: one (scenario, expected, observed) row per test."""

  def __init__(self):
    self.rows = []

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_makereport(self, item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != 'call' and not (report.when == 'setup' and report.failed):
      return
    doc = [l.strip() for l in (item.function.__doc__ or '').splitlines()
           if l.strip()]
    params = getattr(item, 'callspec', None)
    params = params.params if params else {}
    if 'args' in params:  # CLI mistakes: the override and the expected line.
      scenario = 'user mistake: ' + ' '.join(params['args'])
      expected = f'exit 1, "{params["message"]}..."'
    else:
      scenario = doc[0] if doc else item.name
      extra = ', '.join(f'{k}={getattr(v, "name", v)}' for k, v in params.items())
      scenario += f' [{extra}]' if extra else ''
      expected = doc[1] if len(doc) > 1 else 'passes'
    if report.passed:
      observed = 'OK'
    else:
      last = str(report.longrepr).strip().splitlines()[-1]
      observed = f'FAILED: {last[:120]}'
    self.rows.append((scenario, expected, observed))


def main() -> int:
  os.chdir(ROOT)
  collect = _Collect()
  code = pytest.main(['-q', '-p', 'no:cacheprovider', *SCENARIOS],
                     plugins=[collect])
  width = max(len(r[0]) for r in collect.rows)
  print(f'\n{"scenario":<{width}}  observed  expected')
  for scenario, expected, observed in collect.rows:
    print(f'{scenario:<{width}}  {observed:<8}  {expected}')
  ok = sum(r[2] == 'OK' for r in collect.rows)
  print(f'\n{ok} of {len(collect.rows)} scenarios OK')
  return int(code)


if __name__ == '__main__':
  sys.exit(main())
