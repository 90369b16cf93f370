"""`python -m experiments.sweep` end to end on a tiny MLP, and the search
space's checks. Trials are processes, so the sweeps here are short.

The PostgreSQL test needs a server: `eval "$(bash tests/start_postgres.sh)"`
starts one and sets BIGML_TEST_POSTGRES_URL.
"""

import csv
import glob
import importlib.util
import json
import os
import signal
import struct
import subprocess
import sys
import time

import ml_collections
import optuna
from optuna.trial import TrialState
from PIL import Image
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto import plugin_hparams_pb2

from bigml_jax import tuning
from bigml_jax.errors import ConfigError
from bigml_jax.tuning import driver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTGRES = 'BIGML_TEST_POSTGRES_URL'

# The tests' tiny MLP (conftest.tiny_config) as a config file, with a space.
CONFIG = '''
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(
      {{'name': 'mlp', 'features': (32,), 'dropout_rate': 0.1}})
  c.dataset = ml_collections.ConfigDict(
      {{'name': 'digits', 'train_split': 'train', 'eval_split': 'test',
       'data_dir': {data_dir!r}}})
  c.batch_size = 32
  c.total_steps = 20
  c.log_every = 10
  c.eval_every = 10
  c.checkpoint_every = 10
  c.max_to_keep = 2
  c.optimizer = ml_collections.ConfigDict(
      {{'name': 'adamw', 'learning_rate': 1e-2, 'schedule': 'constant',
       'warmup_steps': 0, 'weight_decay': 1e-4, 'grad_clip_norm': 1.0}})
  c.mesh = ml_collections.ConfigDict({{'data': -1, 'fsdp': 1, 'tensor': 1}})
  return c


def get_sweep():
  return {{'metric': 'accuracy', 'mode': 'max',
          'space': {{'optimizer.learning_rate': 'loguniform(1e-3, 3e-2)',
                    'model.dropout_rate': 'uniform(0.0, 0.5)'}}}}
'''


@pytest.fixture
def config_file(tmp_path, data_dir):
  path = tmp_path / 'tiny.py'
  path.write_text(CONFIG.format(data_dir=data_dir))
  return str(path)


def _command(*args):
  return [sys.executable, '-m', 'experiments.sweep', *map(str, args)]


def _env():
  """The tests' environment, but trials see one CPU device: sharding is
  tested elsewhere, and a trial on 8 starts ~30% slower."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
      '--xla_force_host_platform_device_count=8',
      '--xla_force_host_platform_device_count=1')
  return env


def sweep(*args):
  return subprocess.run(_command(*args), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=900)


def start(*args):
  return subprocess.Popen(_command(*args), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _load(config_file):
  spec = importlib.util.spec_from_file_location('tiny_config', config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def study_trials(workdir, storage=None, study=None):
  return tuning.load_study(str(workdir), storage, study).get_trials()


def wait_for(condition, what, timeout=600):
  """Polls `condition` (the state of another process) until it holds."""
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.2)


def running_trial(workdir, number, storage=None, study=None):
  """Whether trial `number` runs, with its process started."""
  try:
    trials = study_trials(workdir, storage, study)
  except (ConfigError, KeyError):  # The study is not created yet.
    return False
  return any(t.number == number and t.state == TrialState.RUNNING and
             'process' in t.user_attrs for t in trials)


def read_csv(workdir):
  with open(os.path.join(workdir, 'trials.csv')) as f:
    return list(csv.DictReader(f))


def last_eval(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r for r in rows if r['split'] == 'eval'][-1]


def hparams(workdir):
  """The hparams a trial's workdir shows TensorBoard's HParams dashboard."""
  (path,) = glob.glob(os.path.join(workdir, 'events.out.tfevents.*.hparams'))
  data, pos, out = open(path, 'rb').read(), 0, {}
  while pos < len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 16 + length
    for value in event.summary.value:
      info = plugin_hparams_pb2.HParamsPluginData.FromString(
          value.metadata.plugin_data.content)
      if info.HasField('session_start_info'):
        out = {k: v.number_value or v.string_value
               for k, v in info.session_start_info.hparams.items()}
  return out


def test_four_trials_table_plots_and_best_flagfile_reproduce(
    tmp_path, config_file):
  workdir = tmp_path / 'sweep'
  proc = sweep(f'--config={config_file}', f'--workdir={workdir}',
               '--trials=4', '--workers=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '4 trials: 4 complete' in proc.stdout
  rows = read_csv(workdir)
  assert [int(r['trial']) for r in rows] == [0, 1, 2, 3]
  assert list(rows[0]) == ['trial', 'optimizer.learning_rate',
                           'model.dropout_rate', 'eval_accuracy', 'eval_loss',
                           'steps', 'wall_s', 'state', 'note']
  assert all(r['state'] == 'COMPLETE' and r['steps'] == '20' for r in rows)
  # Trial 0 is the config as it is.
  assert (float(rows[0]['optimizer.learning_rate']),
          float(rows[0]['model.dropout_rate'])) == (1e-2, 0.1)
  for r in rows:  # Each row is its trial's last eval, in its own workdir.
    trial_dir = workdir / 'trials' / f'{int(r["trial"]):04d}'
    assert float(r['eval_accuracy']) == last_eval(trial_dir)['accuracy']
    shown = hparams(trial_dir)
    assert shown['optimizer.learning_rate'] == float(
        r['optimizer.learning_rate']) and shown['state'] == 'COMPLETE'
  best = max(rows, key=lambda r: float(r['eval_accuracy']))

  run = subprocess.run(
      [sys.executable, '-m', 'experiments.run',
       f'--flagfile={workdir / "best.flags"}',
       f'--workdir={tmp_path / "best"}'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert last_eval(tmp_path / 'best')['accuracy'] == float(
      best['eval_accuracy'])
  for name in ('history', 'importances', 'parallel'):
    with Image.open(workdir / 'plots' / f'{name}.png') as image:
      assert image.size == (900, 550)


def test_pruner_stops_a_planted_bad_trial(tmp_path, config_file):
  workdir = tmp_path / 'sweep'
  # The bad trial would run 5,000 steps: the pruner stops it at an early
  # eval, where its accuracy is below the finished trial's.
  space = {'total_steps': 'choice(20, 5000)'}
  # The study, made as a notebook would (trial 0, the config as it is,
  # waits in it), and the bad trial planted after it.
  module = _load(config_file)
  tuning.run_sweep(tuning.make_sweep(
      config_file, module.get_config(), [], str(workdir),
      sweep_spec=module.get_sweep(), space_args=space), trials=0)
  tuning.load_study(str(workdir)).enqueue_trial(
      {'optimizer.learning_rate': 1e-3, 'model.dropout_rate': 0.1,
       'total_steps': 5000})
  proc = sweep(f'--config={config_file}', f'--workdir={workdir}',
               f'--space=total_steps={space["total_steps"]}',
               '--startup_trials=1', '--trials=2')
  assert proc.returncode == 0, proc.stderr[-3000:]
  good, bad = study_trials(workdir)
  assert good.state == TrialState.COMPLETE and good.params['total_steps'] == 20
  assert bad.state == TrialState.PRUNED
  assert bad.params['optimizer.learning_rate'] == 1e-3
  assert 10 <= bad.user_attrs['steps'] < 5000
  assert bad.intermediate_values[10] < good.intermediate_values[10]
  bad_dir = workdir / bad.user_attrs['workdir']
  assert 'preempted: stopped by SIGTERM' in (bad_dir / 'run.log').read_text()
  assert os.listdir(bad_dir / 'checkpoints')  # It stopped with a checkpoint.
  assert 'pruning: 1 trials stopped early' in proc.stdout


def test_killed_sweep_resumes_without_repeating_finished_trials(
    tmp_path, config_file):
  workdir = tmp_path / 'sweep'
  args = (f'--config={config_file}', f'--workdir={workdir}', '--trials=2')
  first = start(*args)
  wait_for(lambda: running_trial(workdir, 1), 'trial 1 to start')
  first.kill()  # SIGKILL: no chance to tidy up.
  first.communicate()
  (done, lost) = study_trials(workdir)
  assert done.state == TrialState.COMPLETE and lost.state == TrialState.RUNNING
  done_metrics = (workdir / 'trials/0000/metrics.jsonl').read_bytes()

  proc = sweep(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  trials = study_trials(workdir)
  assert [t.state for t in trials] == [
      TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
  # Trial 0 was not run again; trial 1's parameters were, in its workdir.
  assert (workdir / 'trials/0000/metrics.jsonl').read_bytes() == done_metrics
  assert trials[1].user_attrs['lost'] == 'worker died'
  assert trials[2].params == trials[1].params
  assert trials[2].user_attrs['retry_of'] == 1
  assert trials[2].user_attrs['workdir'] == trials[1].user_attrs['workdir']
  process = trials[1].user_attrs['process']  # 'PID:START'; now gone.
  assert driver.process_id(int(process.split(':')[0])) != process
  assert [int(r['trial']) for r in read_csv(workdir)] == [0, 2]


@pytest.mark.parametrize('storage', ['file', 'postgresql'])
def test_two_workers_share_one_study(tmp_path, config_file, storage):
  if storage == 'file':  # Two processes on one SWEEP_DIR.
    dirs, extra, url, name = [tmp_path / 'sweep'] * 2, [], None, None
  else:  # As on two machines: each its own SWEEP_DIR, one database.
    url = os.environ.get(POSTGRES)
    if not url:
      pytest.fail(f'{POSTGRES} is not set: start the test server with '
                  'eval "$(bash tests/start_postgres.sh)"')
    name = f'test_{tmp_path.name}_{os.getpid()}'
    dirs = [tmp_path / 'a', tmp_path / 'b']
    extra = [f'--storage={url}', f'--study={name}']
  args = [f'--config={config_file}', '--trials=2', *extra]
  a = start(*args, f'--workdir={dirs[0]}')
  wait_for(lambda: running_trial(dirs[0], 0, url, name), 'trial 0 to start')
  # Trial 0's run is held (its worker keeps polling, holding no lock) until
  # the second worker has taken trial 1: the share does not hang on timing.
  (trial,) = [t for t in study_trials(dirs[0], url, name) if t.number == 0]
  held = int(trial.user_attrs['process'].split(':')[0])
  os.kill(held, signal.SIGSTOP)
  try:
    b = start(*args, f'--workdir={dirs[1]}')
    wait_for(lambda: running_trial(dirs[1], 1, url, name), 'trial 1 to start')
  finally:
    os.kill(held, signal.SIGCONT)
  for proc in (a, b):
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
  trials = study_trials(dirs[0], url, name)
  assert [t.number for t in trials] == [0, 1]
  assert all(t.state == TrialState.COMPLETE for t in trials)
  workers = {t.user_attrs['worker'].split(':')[0] for t in trials}
  assert workers == {str(a.pid), str(b.pid)}
  for t in trials:  # Each trial ran once, in its worker's SWEEP_DIR.
    (home,) = [d for d in set(dirs) if (d / t.user_attrs['workdir']).exists()]
    assert last_eval(home / t.user_attrs['workdir'])['accuracy'] == t.value
  if url:
    study = tuning.load_study(str(dirs[0]), url, name)
    optuna.delete_study(study_name=name, storage=study._storage)  # pylint: disable=protected-access


def test_a_metric_the_run_does_not_log_ends_the_sweep(tmp_path, config_file):
  workdir = tmp_path / 'sweep'
  proc = sweep(f'--config={config_file}', f'--workdir={workdir}',
               '--trials=2', '--metric=acuracy')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: metric acuracy is not logged by this run's evals (they log "
      'accuracy, loss); did you mean accuracy? pass --metric=NAME (and '
      '--mode) or fix get_sweep()')
  assert not workdir.exists()


def test_a_run_that_fails_before_its_first_step_ends_the_sweep(
    tmp_path, config_file):
  workdir = tmp_path / 'sweep'
  proc = sweep(f'--config={config_file}', f'--workdir={workdir}',
               '--trials=3', '--config.dataset.name=mnist')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'error: trial 0 failed before its first step (exit code 1): dataset '
      "'mnist' is not prepared under ")
  assert not workdir.exists()


@pytest.mark.parametrize('args, message', [
    (['--space=optimizer.learnig_rate=loguniform(1e-3, 1e-1)'],
     'error: search space field optimizer.learnig_rate (--space) is not a '
     'field of the config; did you mean optimizer.learning_rate?'),
    (['--storage=postgresql://nobody@127.0.0.1:1/nowhere'],
     'error: storage postgresql://nobody@127.0.0.1:1/nowhere is unreachable: '
     'connection to server at "127.0.0.1", port 1 failed: Connection '
     'refused; start the database or fix --storage'),
])
def test_cli_mistakes_fail_in_one_line_and_write_nothing(
    tmp_path, config_file, args, message):
  workdir = tmp_path / 'sweep'
  proc = sweep(f'--config={config_file}', f'--workdir={workdir}',
               '--trials=2', *args)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == message
  assert not workdir.exists()


def _config():
  return ml_collections.ConfigDict({
      'seed': 0, 'total_steps': 100, 'batch_size': 8, 'log_every': 10,
      'eval_every': 50, 'checkpoint_every': 50, 'max_to_keep': 1,
      'model': {'name': 'mlp', 'features': (32,), 'dropout_rate': 0.1},
      'dataset': {'name': 'digits', 'train_split': 'train',
                  'eval_split': 'test'},
      'optimizer': {'name': 'adamw', 'learning_rate': 1e-2,
                    'schedule': 'constant', 'warmup_steps': 0,
                    'weight_decay': 0.0, 'grad_clip_norm': 0.0},
      'mesh': {'data': -1, 'fsdp': 1, 'tensor': 1}})


@pytest.mark.parametrize('field, spec, message', [
    ('optimizer.learning_rate', 'loguniform(0.1, 1e-3)',
     'optimizer.learning_rate=loguniform(0.1, 1e-3) (--space) is inverted: '
     'low 0.1 > high 0.001; write loguniform(0.001, 0.1)'),
    ('model.dropout_rate', 'uniform(0.2, 0.2)',
     'model.dropout_rate=uniform(0.2, 0.2) (--space) is an empty range; '
     'give low < high'),
    ('optimizer.weight_decay', 'loguniform(0, 1e-2)',
     'a log scale needs low > 0'),
    ('model.features', 'choice()', 'is empty; list at least one value'),
    ('optimizer.name', 'choise(sgd, adam)',
     'unknown distribution choise; did you mean choice?'),
    ('optimizer.warmup_steps', 'int(0, 1.5)', 'int takes two integers'),
    ('optimizer.learning_rate', 'loguniform(1e-3 1e-1)',
     'is not a distribution; write one of'),
    ('optimizer', 'uniform(0, 1)',
     'search space field optimizer (--space) is a section, not a field'),
    ('optimizer.warmup_steps', 'uniform(0, 10)',
     'does not fit the field'),
    ('optimizer.warmup_steps', 'int(0, 500)',
     'with optimizer.warmup_steps=500 the config is invalid: '
     'optimizer.warmup_steps 500 must be in [0, total_steps=100]'),
])
def test_space_mistakes_name_the_field_and_the_fix(field, spec, message):
  with pytest.raises(ConfigError) as e:
    tuning.make_sweep('tiny.py', _config(), [], '/unused',
                      space_args={field: spec})
  assert message in str(e.value)


def test_space_parses_every_kind_and_fixes_overridden_fields():
  sweep = tuning.make_sweep(
      'tiny.py', _config(), ['--config.model.dropout_rate=0.3'], '/unused',
      sweep_spec={'space': {'model.dropout_rate': 'uniform(0, 0.5)',
                            'optimizer.learning_rate': 'loguniform(1e-3, 1)'},
                  'mode': 'max', 'metric': 'accuracy'},
      space_args={'optimizer.learning_rate': 'loguniform(1e-3, 1e-1)',
                  'optimizer.warmup_steps': 'int(0, 10)',
                  'batch_size': 'logint(8, 64)',
                  'model.features': 'choice((16,), (32, 32))',
                  'optimizer.name': 'choice(sgd, adamw)'})
  assert {f: p.text for f, p in sweep.space.items()} == {
      'optimizer.learning_rate': 'loguniform(0.001, 0.1)',
      'optimizer.warmup_steps': 'int(0, 10)',
      'batch_size': 'logint(8, 64)',
      'model.features': 'choice((16,), (32, 32))',
      'optimizer.name': 'choice(sgd, adamw)'}
  assert (sweep.metric, sweep.mode) == ('accuracy', 'max')
  # The config's own values lie in the space: they run first.
  assert sweep.baseline is None  # features (32,) is not a choice.
  trial = optuna.create_study().ask()
  values = {f: p.suggest(trial) for f, p in sweep.space.items()}
  assert values['model.features'] in ((16,), (32, 32))
  assert trial.params['model.features'] in ('(16,)', '(32, 32)')


@pytest.mark.filterwarnings('ignore:Heartbeat of storage is supposed')
def test_a_trial_whose_machine_went_silent_runs_again(tmp_path):
  """On a database, a worker on another machine is lost when its trial's
  heartbeat goes stale: the trial fails and its parameters wait to run
  again, in its workdir."""
  url = os.environ.get(POSTGRES)
  if not url:
    pytest.fail(f'{POSTGRES} is not set: start the test server with '
                'eval "$(bash tests/start_postgres.sh)"')
  sweep = tuning.Sweep('tiny.py', [], {}, 'loss', 'min', str(tmp_path),
                       storage=url, study_name=f'hb_{tmp_path.name}')
  storage = driver.open_storage(sweep)
  storage.heartbeat_interval, storage.grace_period = 1, 1
  study = optuna.create_study(study_name=sweep.name, storage=storage)
  trial = study.ask()
  trial.suggest_float('optimizer.learning_rate', 1e-3, 1e-1, log=True)
  for key, value in {'host': 'elsewhere', 'worker': '1:1',
                     'workdir': 'trials/0000'}.items():
    trial.set_user_attr(key, value)
  storage.record_heartbeat(trial._trial_id)  # pylint: disable=protected-access

  def lost():
    driver.recover_lost(study)
    return study.get_trials()[0].state == TrialState.FAIL

  wait_for(lost, 'the heartbeat to go stale', timeout=60)
  lost_trial, retry = study.get_trials()
  assert retry.state == TrialState.WAITING
  assert retry.user_attrs == {'retry_of': 0, 'workdir': 'trials/0000'}
  assert retry.system_attrs['fixed_params'] == lost_trial.params
  optuna.delete_study(study_name=sweep.name, storage=storage)


@pytest.mark.parametrize('name, baseline', [('digits_mlp.py', True),
                                            ('rnn_fortunes.py:rnn', False)])
def test_shipped_search_spaces_fit_their_configs(name, baseline):
  path, _, arg = name.partition(':')
  module = _load(os.path.join(ROOT, 'experiments/configs', path))
  config = module.get_config(*filter(None, [arg]))
  sweep = tuning.make_sweep(name, config, [], '/unused',
                            sweep_spec=module.get_sweep(*filter(None, [arg])))
  assert set(sweep.space) == {'optimizer.learning_rate',
                              'optimizer.weight_decay', 'model.dropout_rate'}
  # The RNN's weight decay, 0, lies outside its log-uniform range.
  assert (sweep.baseline is not None) == baseline
