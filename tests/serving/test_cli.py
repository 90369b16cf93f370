"""The CLIs (export, predict, serve) and loading in a fresh process."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import httpx
import numpy as np
from PIL import Image
import pytest

from bigml_jax.errors import ConfigError
from bigml_jax.serving import load
from experiments import serve as serve_cli
from experiments.predict import predict_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_IMAGES = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(
    np.uint8)

# Loads both artifacts and runs them, then lists what it imported.
_FRESH = '''
import json, sys
import numpy as np
from bigml_jax import serving
classifier = serving.load(sys.argv[1])
generator = serving.load(sys.argv[2])
out = {'labels': [p['label'] for p in classifier(np.load(sys.argv[3]))],
       'texts': generator(['And God', 'In the'], temperature=0.0),
       'modules': sorted(m for m in sys.modules
                         if m.split('.')[0] == 'flax' or
                         m.startswith('bigml_jax.models'))}
print(json.dumps(out))
'''


def _run(*args, timeout=600):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def test_artifacts_load_in_a_process_without_flax(cnn_export, gpt_export,
                                                  tmp_path):
  np.save(tmp_path / 'images.npy', _IMAGES)
  proc = _run('-c', _FRESH, cnn_export, gpt_export,
              str(tmp_path / 'images.npy'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout)
  assert out['modules'] == []
  assert out['labels'] == [p['label'] for p in load(cnn_export)(_IMAGES)]
  assert out['texts'] == load(gpt_export)(['And God', 'In the'],
                                          temperature=0.0)


def test_export_cli_writes_an_int8_artifact(cnn_run, tmp_path):
  out = tmp_path / 'int8'
  proc = _run('-m', 'experiments.export', f'--workdir={cnn_run}',
              f'--out={out}', '--quantize=int8', '--platforms=cpu,cuda')
  assert proc.returncode == 0, proc.stderr[-3000:]
  manifest = json.load(open(out / 'manifest.json'))
  params = manifest['params']
  assert proc.stdout == (
      f'exported {cnn_run} step 10 (classifier, {params["count"]:,} '
      f'parameters, {params["stored_bytes"]:,} bytes, int8) to {out} for '
      'cpu, cuda\n')
  assert manifest['platforms'] == ['cpu', 'cuda']
  assert sorted(os.listdir(out)) == ['config.json', 'manifest.json',
                                     'params.npz', 'predict.jax']


def test_export_cli_mistakes_end_in_one_line(tmp_path):
  proc = _run('-m', 'experiments.export', f'--workdir={tmp_path}',
              f'--out={tmp_path / "out"}')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      f'error: --workdir {tmp_path} holds no config.json; pass the workdir '
      'of a run')
  assert not (tmp_path / 'out').exists()


def test_predict_cli_prints_json_lines(cnn_export, tmp_path):
  Image.fromarray(_IMAGES[0, ..., 0]).save(tmp_path / 'a.png')
  np.save(tmp_path / 'b.npy', _IMAGES[1:])
  images = _run('-m', 'experiments.predict', f'--model={cnn_export}',
                f'--inputs={tmp_path}')
  assert images.returncode == 0, images.stderr[-3000:]
  want = load(cnn_export)(_IMAGES)
  assert [json.loads(l) for l in images.stdout.splitlines()] == [
      dict(input=name, **p) for name, p in zip(
          [f'{tmp_path}/a.png', f'{tmp_path}/b.npy[0]', f'{tmp_path}/b.npy[1]'],
          want)]


def test_predict_continues_each_prompt_line(gpt_export, tmp_path):
  (tmp_path / 'prompts.txt').write_text('And God\n\nIn the\n')
  completions = load(gpt_export)(['And God', 'In the'], temperature=0.0)
  assert predict_file(gpt_export, str(tmp_path / 'prompts.txt'),
                      temperature=0.0) == [
      {'input': f'{tmp_path}/prompts.txt:1', 'prompt': 'And God',
       'completion': completions[0]},
      {'input': f'{tmp_path}/prompts.txt:3', 'prompt': 'In the',
       'completion': completions[1]}]


def test_predict_mistakes_name_the_input(cnn_export, gpt_export, tmp_path):
  (tmp_path / 'bad.txt').write_text('And\nJ\u00e9sus\n')
  with pytest.raises(ConfigError, match=re.escape(
      f'{tmp_path}/bad.txt:2: the prompt has characters the model never saw '
      "in training ('\u00e9'); leave them out")):
    predict_file(gpt_export, str(tmp_path / 'bad.txt'))
  with pytest.raises(ConfigError, match=re.escape(
      f'--inputs {tmp_path}/bad.txt is not an image (.png, .jpg, .jpeg, '
      '.npy) or a directory of them; this model takes 8x8x1 images')):
    predict_file(cnn_export, str(tmp_path / 'bad.txt'))
  np.save(tmp_path / 'big.npy', np.zeros((9, 9), np.uint8))
  with pytest.raises(ConfigError, match=re.escape(
      f'{tmp_path}/big.npy: an image must be 8x8x1, got shape [9, 9]')):
    predict_file(cnn_export, str(tmp_path / 'big.npy'))
  with pytest.raises(ConfigError, match='max_new_tokens must be 1 to 8'):
    predict_file(gpt_export, str(tmp_path / 'bad.txt'), max_new_tokens=9)


def test_serve_cli_answers_http_until_stopped(cnn_export):
  proc = subprocess.Popen(
      [sys.executable, '-m', 'experiments.serve', f'--model={cnn_export}',
       '--port=0', '--max_batch=2', '--max_wait_ms=0'],
      cwd=ROOT, stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stderr:  # Its log line says where it listens.
      found = re.search(r'serving .* on (http://127.0.0.1:\d+);', line)
      if found:
        break
    assert found, 'the server exited without listening'
    url = found.group(1)
    response = httpx.post(url + '/v1/predict',
                          json={'inputs': _IMAGES[:2].tolist()}, timeout=60)
    assert response.json()['predictions'] == load(cnn_export)(_IMAGES[:2])
    assert response.json()['batch']['padded_to'] == 2
  finally:
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
  # uvicorn shuts down, then ends by the signal it got, as is conventional.
  assert proc.returncode == -signal.SIGTERM
  assert 'Traceback' not in rest


def test_serve_refuses_a_busy_port():
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    with pytest.raises(ConfigError, match=re.escape(
        f'cannot listen on 127.0.0.1:{port} (Address already in use); pick '
        'another --port or --host')):
      serve_cli._listen('127.0.0.1', port)  # pylint: disable=protected-access
