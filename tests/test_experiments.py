"""The README's library example trains as written (every shipped config's
first steps are pinned in tests/training/test_pinned_losses.py)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_library_example_trains(tmp_path):
  """The README's own-module example, as written, on the tests' 8 devices."""
  readme = open(os.path.join(ROOT, 'README.md')).read()
  section = readme[readme.index('## Using the library'):
                   readme.index('## Scaling')]
  code = [b for b in re.findall(r'```python\n(.*?)```', section, re.S)
          if 'sharded_init' in b][0]
  proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Adam memorises one fixed batch of 64: the loss falls from ~2.3.
  assert float(proc.stdout.strip().splitlines()[-1]) < 0.5
