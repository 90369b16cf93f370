"""`python -m experiments.run` end to end, and its one-line errors."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

from bigml_jax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = 'experiments/configs/default.py'


def run(*args, data_dir=None, home=None):
  env = dict(os.environ)
  if home:  # The CLI's own compilation cache, not the test session's.
    env['HOME'] = str(home)
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
  if data_dir:
    args += (f'--config.dataset.data_dir={data_dir}',)
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


def _tensorboard_scalars(workdir):
  """{tag: [(step, value)]} from the TFRecord-framed event files."""
  out = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_default_experiment_end_to_end(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  proc = run(f'--config={DEFAULT}', f'--workdir={workdir}',
             '--config.total_steps=60', '--config.log_every=20',
             '--config.eval_every=30', '--config.checkpoint_every=30',
             '--config.optimizer.warmup_steps=5', data_dir=data_dir,
             home=tmp_path / 'home')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.listdir(tmp_path / 'home' / '.cache' / 'bigml_jax' / 'xla')
  if host.environ_for_run(os.environ) is not None:  # glibc 2.35+, on CPU
    assert 'malloc: transparent huge pages requested' in proc.stderr
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith('step 60: test loss ') and 'test accuracy' in last
  accuracy = float(last.rsplit(' ', 1)[1])
  assert accuracy > 0.8  # 60 steps of the CNN on digits; chance is 0.1

  with open(workdir / 'config.json') as f:
    config = json.load(f)
  assert config['total_steps'] == 60 and config['model']['name'] == 'cnn'
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['30', '60']

  rows = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  train = [r for r in rows if r['split'] == 'train']
  assert [r['step'] for r in train] == [1, 20, 40, 60]
  assert train[-1]['loss'] < 0.6 * train[0]['loss']
  evals = [r for r in rows if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [30, 60]
  assert evals[-1]['accuracy'] == pytest.approx(accuracy, abs=1e-4)

  scalars = _tensorboard_scalars(workdir)
  assert [s for s, _ in scalars['train/loss']] == [1, 20, 40, 60]
  assert scalars['train/loss'][-1][1] == pytest.approx(train[-1]['loss'], rel=1e-5)
  assert [s for s, _ in scalars['eval/accuracy']] == [30, 60]


def test_rerun_resumes_from_the_workdir(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  common = (f'--config={DEFAULT}', f'--workdir={workdir}',
            '--config.log_every=10', '--config.eval_every=100',
            '--config.checkpoint_every=10', '--config.optimizer.warmup_steps=0')
  assert run(*common, '--config.total_steps=10', data_dir=data_dir).returncode == 0
  proc = run(*common, '--config.total_steps=20', data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'resumed from' in proc.stderr and 'at step 10' in proc.stderr
  rows = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  # The resumed run's first row covers a full log interval (11..20).
  assert [r['step'] for r in rows if r['split'] == 'train'] == [1, 10, 20]


def test_flagfile_sets_run_flags(tmp_path, data_dir):
  flagfile = tmp_path / 'flags.txt'
  flagfile.write_text(f'--config={DEFAULT}\n--workdir={tmp_path / "w"}\n'
                      '--config.total_steps=2\n--config.log_every=1\n'
                      '--config.optimizer.warmup_steps=0\n')
  proc = run(f'--flagfile={flagfile}', data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().startswith('step 2: test loss')
  assert json.load(open(tmp_path / 'w' / 'config.json'))['total_steps'] == 2


@pytest.mark.parametrize('parallelism', ['jit', 'pmap'])
def test_many_steps_between_logs_on_eight_host_devices(tmp_path, data_dir,
                                                       parallelism):
  # XLA:CPU deadlocked (a collective's rendezvous never filled, then an
  # abort) with ~100 steps over 8 host devices in flight.
  proc = run(f'--config={DEFAULT}', f'--workdir={tmp_path}',
             '--config.total_steps=160', '--config.log_every=160',
             '--config.eval_every=160', '--config.checkpoint_every=160',
             f'--config.parallelism={parallelism}', data_dir=data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1].startswith('step 160: test loss')


@pytest.mark.parametrize('args,message', [
    (('--config.optimizer.learning_rte=0.1',),
     'error: config has no field \'learning_rte\' Did you mean "learning_rate"'),
    (('--config.modle.channels=(8,)',),
     'error: config has no field \'modle\' Did you mean "model" instead of '
     '"modle"?; overrides must name existing fields'),
    (('--config.batch_size=abc',),
     "error: flag --config.batch_size=abc: invalid literal for int()"),
    (('--config.model.name=resnet',),
     "error: model.name 'resnet' is unknown; known models: bag_of_embeddings, "
     'bert, bert_mlm, cnn'),
    (('--config.dataset.name=imagenet2012',),
     "error: dataset 'imagenet2012' is not prepared under"),
    (('--config.batch_size=6', '--config.mesh.data=4'),
     'error: mesh (data=4, fsdp=1, tensor=1) has 4 devices but there are 8'),
    (('--config.batch_size=12',),
     'error: batch_size 12 is not divisible by 8 data-parallel devices'),
    (('--config.optimizer.name=lamb',),
     "error: optimizer.name 'lamb' is unknown; use one of sgd, adam, adamw"),
    (('--workdir=gs://my-bucket/runs/x',),
     'error: workdir gs://my-bucket/runs/x: URL workdirs are not supported '
     'yet; pass a directory every host sees'),
    (('--config.init_from=/nonexistent/run',),
     'error: init_from /nonexistent/run holds no checkpoint; pass the workdir '
     'of a run that saved one'),
    (('--config.dataset.name=synthetic',),
     'error: dataset synthetic needs dataset.shape, dataset.num_classes, '
     'dataset.num_train, dataset.num_eval; add them to the dataset section'),
])
def test_user_mistakes_fail_in_one_line(tmp_path, data_dir, args, message):
  proc = run(f'--config={DEFAULT}', f'--workdir={tmp_path}', *args,
             data_dir=data_dir)
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(message), proc.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_missing_config_file(tmp_path):
  """user mistake: a config file that does not exist
  exit 1, one line naming the path and the expected form"""
  proc = run('--config=experiments/configs/nope.py', f'--workdir={tmp_path}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == ('error: config file experiments/configs/nope.py '
                                 'not found; pass --config=experiments/configs/NAME.py')


def test_config_argument_get_config_does_not_take(tmp_path):
  """user mistake: `:ARG` after a config whose get_config() takes none
  exit 1, one line with get_config()'s error, not its traceback"""
  proc = run(f'--config={DEFAULT}:wide', f'--workdir={tmp_path}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
      f'error: config file {DEFAULT} did not load: TypeError: get_config() '
      'takes 0 positional arguments but 1 was given; fix the file, or the '
      'argument after its `:`')


def test_config_file_that_reads_a_missing_field(tmp_path):
  """user mistake: get_config() reads a field its ConfigDict lacks
  exit 1, one line blaming the file, not an override"""
  config = tmp_path / 'typo.py'
  config.write_text('import ml_collections\ndef get_config():\n'
                    '  return ml_collections.ConfigDict().modle\n')
  proc = run(f'--config={config}', f'--workdir={tmp_path / "w"}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
      f'error: config file {config} line 3 did not load: AttributeError: '
      'modle; fix the file')


def test_a_model_mistake_writes_no_tokenizer(tmp_path, data_dir):
  """user mistake: a model hyperparameter rejected at trace time, on text
  exit 1, one line; the workdir keeps no tokenizer to trip the next run"""
  proc = run('--config=experiments/configs/rnn_fortunes.py:rnn',
             f'--workdir={tmp_path}', '--config.model.cell=elman',
             data_dir=data_dir)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: cell 'elman' is unknown; use 'rnn', 'lstm' or 'gru'")
  assert not os.path.exists(tmp_path / 'tokenizer.json')


@pytest.mark.parametrize('source,error', [
    ('def get_config(:\n  pass\n', 'line 1 did not load: SyntaxError: '
     'invalid syntax; fix the file'),
    ('import ml_collections\ndef get_config():\n  c = '
     'ml_collections.ConfigDict()\n  c.x = undefined_name\n  return c\n',
     "line 4 did not load: NameError: name 'undefined_name' is not defined; "
     'fix the file'),
    ('import no_such_module\ndef get_config():\n  return None\n',
     "line 1 did not load: ModuleNotFoundError: No module named "
     "'no_such_module'; fix the file"),
])
def test_config_file_that_raises(tmp_path, source, error):
  """user mistake: a config file with a SyntaxError, NameError, ImportError
  exit 1, one line naming the file, the line and the error"""
  config = tmp_path / 'broken.py'
  config.write_text(source)
  proc = run(f'--config={config}', f'--workdir={tmp_path / "w"}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == f'error: config file {config} {error}'
  assert not os.path.exists(tmp_path / 'w')


def test_config_file_without_get_config(tmp_path):
  """user mistake: a config file with no get_config()
  exit 1, one line saying what to define; nothing written"""
  config = tmp_path / 'broken.py'
  config.write_text('import ml_collections\nCONFIG = 1\n')
  proc = run(f'--config={config}', f'--workdir={tmp_path / "w"}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
      f'error: config file {config} has no get_config(); define get_config() '
      'returning an ml_collections.ConfigDict')
  assert not os.path.exists(tmp_path / 'w')


def test_cli_restarts_itself_once_even_if_glibc_drops_the_tunable(tmp_path):
  # glibc drops GLIBC_TUNABLES for setuid and setcap programs; stand in for
  # that by a huge_page_environ that always asks for another restart.
  marker = tmp_path / 'starts'
  code = (
      'import runpy, sys\n'
      'from bigml_jax import host\n'
      f'open({str(marker)!r}, "a").write("start\\n")\n'
      'host.environ_for_run = lambda environ: dict(environ)\n'
      "sys.argv = ['experiments.run', '--config=nope.py', '--workdir=w']\n"
      "runpy.run_module('experiments.run', run_name='__main__')\n")
  env = {k: v for k, v in os.environ.items() if k != 'BIGML_JAX_RESTARTED'}
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert marker.read_text() == 'start\nstart\n'
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: config file nope.py not found; pass '
      '--config=experiments/configs/NAME.py')
