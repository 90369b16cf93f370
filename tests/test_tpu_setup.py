"""tpu_setup.sh: refuses workdirs that would be lost or not shared.

A stand-in `gcloud` on PATH plays a two-worker TPU VM on this machine: each
worker is a directory used as its $HOME, and `ssh --worker=all` runs the
command in both, so the script's own shell commands run for real.
"""

import os
import stat
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_GCLOUD = '''#!/usr/bin/env python3
import os, subprocess, sys
args = sys.argv[1:]
root = os.environ['FAKE_TPU_ROOT']
if 'describe' in args:
  print('READY'); sys.exit(0)
if 'scp' in args:
  i = args.index('scp')
  source, target = args[i + 1], args[i + 2].split(':', 1)[1]
  for w in ('0', '1'):
    home = os.path.join(root, 'worker' + w)
    os.makedirs(home, exist_ok=True)
    subprocess.run(['cp', source, os.path.join(home, target)], check=True)
  sys.exit(0)
if 'ssh' in args:
  worker = [a.split('=', 1)[1] for a in args if a.startswith('--worker=')][0]
  command = args[args.index('--command') + 1]
  for w in (['0', '1'] if worker == 'all' else [worker]):
    home = os.path.join(root, 'worker' + w)
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home)
    if subprocess.run(['bash', '-c', command], cwd=home, env=env).returncode:
      sys.exit(1)
  sys.exit(0)
sys.exit(0)
'''


def _run(tmp_path, *args):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  gcloud = bin_dir / 'gcloud'
  gcloud.write_text(_GCLOUD)
  gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
             FAKE_TPU_ROOT=str(tmp_path / 'tpu'))
  # The launch runs a config that does not exist: it ends at once.
  return subprocess.run(
      ['bash', os.path.join(ROOT, 'tpu_setup.sh'), '--name', 'pod', '--zone',
       'z', '--skip-create', '--skip-install', '--config', 'nope.py', *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_relative_workdir_is_refused(tmp_path):
  proc = _run(tmp_path, '--workdir', 'runs/exp1')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'tpu_setup.sh: error: --workdir runs/exp1 is relative: it would live '
      'inside the code directory, which every upload deletes; pass an '
      'absolute path, e.g. /mnt/BUCKET/runs/NAME')


def test_workdir_not_shared_by_every_worker_is_refused(tmp_path):
  # The default workdir lies under each worker's own $HOME.
  proc = _run(tmp_path)
  assert proc.returncode == 1
  assert 'does not see $HOME/bigml_runs/pod' in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'tpu_setup.sh: error: --workdir $HOME/bigml_runs/pod is not shared by '
      'every worker; pass a directory every worker mounts')
  assert 'experiments.run' not in proc.stderr + proc.stdout


def test_shared_workdir_passes_the_check(tmp_path):
  shared = tmp_path / 'shared' / 'runs'
  proc = _run(tmp_path, '--workdir', str(shared))
  # It gets as far as the launch, where the CLI refuses the config.
  assert 'checking that every worker sees the workdir' in proc.stderr
  assert 'is not shared' not in proc.stderr
  assert 'error: config file nope.py not found' in proc.stderr
  assert not [f for f in os.listdir(shared) if f.startswith('.bigml_shared')]
