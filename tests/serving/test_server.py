"""The HTTP server: a real uvicorn on loopback, a real client (httpx).

Batching is made deterministic by a max wait longer than any test, so a
batch runs exactly when max_batch rows are in; tests assert on what the
server reports (`"batch"` in each response, /v1/model), never on timing.
"""

import asyncio
import base64
import contextlib
import io
import socket
import threading

import httpx
import numpy as np
from PIL import Image
import pytest
import uvicorn

from bigml_jax.serving import load, make_app
from bigml_jax.serving import server as server_lib

_FOREVER_MS = 600_000  # Longer than any test: batches run when full.


@contextlib.contextmanager
def _serving(app):
  sock = socket.socket()
  sock.bind(('127.0.0.1', 0))
  server = uvicorn.Server(uvicorn.Config(app, log_level='warning'))
  thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]},
                            daemon=True)
  thread.start()
  started = threading.Event()
  while not (server.started or not thread.is_alive()):
    started.wait(0.01)
  assert server.started, 'uvicorn did not start'
  try:
    yield f'http://127.0.0.1:{sock.getsockname()[1]}'
  finally:
    server.should_exit = True
    thread.join()


async def _post_all(url, path, bodies):
  async with httpx.AsyncClient(base_url=url, timeout=300) as client:
    return await asyncio.gather(*[client.post(path, json=b) for b in bodies])


def _png(image) -> str:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, 'PNG')
  return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope='module')
def classifier(cnn_export):
  return load(cnn_export)


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 8, 8)).astype(
      np.uint8)


def test_concurrent_requests_share_one_batch_and_bad_ones_stay_out(
    classifier):
  app = make_app(classifier, max_batch=4, max_wait_ms=_FOREVER_MS,
                 batch_sizes=(1, 4))
  images = _images(3)
  good = [{'inputs': [images[0].tolist()]},
          {'inputs': [{'b64': _png(images[1])}]},
          {'inputs': [images[2].tolist(), images[0].tolist()]}]
  bad = [{'inputs': [[[1, 2, 3]]]}, {'inputs': [{'b64': 'aGVsbG8='}]}]
  with _serving(app) as url:
    responses = asyncio.run(_post_all(url, '/v1/predict', bad + good))
    info = httpx.get(url + '/v1/model').json()
    assert httpx.get(url + '/healthz').json() == {'status': 'ok'}
  assert [r.status_code for r in responses] == [400, 400, 200, 200, 200]
  assert responses[0].json() == {
      'error': 'input 0: an image must be 8x8x1, got shape [1, 3]'}
  assert responses[1].json() == {
      'error': 'input 0: the image data is not a PNG, JPEG or .npy file '
               '(UnidentifiedImageError)'}
  bodies = [r.json() for r in responses[2:]]
  # Three requests, four rows: one full batch, padded to nothing more.
  assert [b['batch'] for b in bodies] == [
      {'id': 0, 'rows': 4, 'requests': 3, 'padded_to': 4}] * 3
  want = classifier([images[0], images[1], images[2], images[0]])
  got = [p for b in bodies for p in b['predictions']]
  assert [p['label'] for p in got] == [p['label'] for p in want]
  np.testing.assert_allclose([p['probabilities'] for p in got],
                             [p['probabilities'] for p in want], rtol=1e-6)
  batching = info['batching']
  assert (batching['batches'], batching['requests'], batching['rows']) == (
      1, 3, 4)
  assert batching['batch_rows'] == {'4': 1} and info['rejected'] == {'400': 2}
  # Both batch sizes were compiled before the first request; none since.
  assert sorted(s[0][0] for s in info['model']['compiled']) == [1, 4]
  assert info['model']['classes'] == [str(i) for i in range(10)]
  assert info['runtime']['jax'] == info['model']['versions']['jax']


@pytest.mark.parametrize('request_, error', [
    (dict(content=b'{"inputs": ['), 'the body is not JSON (Expecting value: '
     'line 1 column 13 (char 12))'),
    (dict(json=[1]), 'the body must be a JSON object'),
    (dict(json={'inputs': [], 'extra': 1}),
     'unknown field(s) extra; this endpoint takes inputs'),
    (dict(json={}), 'missing field(s) inputs'),
    (dict(json={'inputs': 'x'}), '"inputs" must be a non-empty list'),
    (dict(json={'inputs': [[[0] * 8] * 8] * 3}),
     '3 inputs are too many; at most 2 per request'),
    (dict(json={'inputs': ['a digit']}), 'input 0: an image must be nested '
     'lists of numbers or {"b64": ...}, not str'),
    (dict(json={'inputs': [[[0.5] * 8] * 8]}), 'input 0: pixel values must '
     "be integers in 0..255 (the run's images were uint8)"),
    (dict(json={'inputs': [{'b64': '***'}]}), 'input 0: "b64" is not valid '
     'base64'),
    (dict(json={'inputs': [{'png': ''}]}), 'input 0: an object input must be '
     '{"b64": base64 image bytes}'),
    (dict(content=b'[' * 3000), 'the body of 3000 bytes is too large; at '
     'most 2048'),
])
def test_bad_requests_get_400_with_one_line_and_serving_goes_on(
    classifier, request_, error):
  app = make_app(classifier, max_batch=2, max_wait_ms=0, batch_sizes=(1, 2),
                 max_body_bytes=2048)
  with _serving(app) as url:
    bad = httpx.post(url + '/v1/predict', **request_)
    good = httpx.post(url + '/v1/predict',
                      json={'inputs': [_images(1)[0].tolist()]})
    wrong_endpoint = httpx.post(url + '/v1/generate', json={'prompt': 'a'})
  assert bad.status_code == 400 and bad.json() == {'error': error}
  assert good.status_code == 200
  assert good.json()['predictions'] == classifier([_images(1)[0]])
  assert wrong_endpoint.status_code == 400
  assert wrong_endpoint.json()['error'] == ('this model classifies; POST '
                                            '/v1/predict')


def test_a_full_queue_answers_503_and_serving_goes_on(classifier,
                                                      monkeypatch):
  app = make_app(classifier, max_batch=1, max_wait_ms=0, max_queue=1,
                 batch_sizes=(1,))
  # The model waits for the test's word before running: the real model,
  # held, so the queue can be filled without racing it.
  go, logits = threading.Event(), classifier.logits
  monkeypatch.setattr(classifier, 'logits',
                      lambda batch: go.wait(300) and logits(batch))
  body = {'inputs': [_images(1)[0].tolist()]}

  async def scenario(url):
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

      async def until(key, value):
        while (await client.get('/v1/model')).json()['batching'][key] != value:
          await asyncio.sleep(0.01)

      first = asyncio.create_task(client.post('/v1/predict', json=body))
      await until('in_flight_rows', 1)  # Taken by the worker, held.
      second = asyncio.create_task(client.post('/v1/predict', json=body))
      await until('queued_rows', 1)  # The queue is full.
      refused = await client.post('/v1/predict', json=body)
      go.set()
      done = [await first, await second]
      after = await client.post('/v1/predict', json=body)
      return refused, done, after, (await client.get('/v1/model')).json()

  with _serving(app) as url:
    refused, done, after, info = asyncio.run(scenario(url))
  assert refused.status_code == 503
  assert refused.headers['retry-after'] == '1'
  assert refused.json() == {'error': 'the server is overloaded (1 rows '
                                     'queued); retry later'}
  assert [r.status_code for r in done + [after]] == [200, 200, 200]
  assert info['rejected'] == {'503': 1}
  assert info['batching']['overloaded'] == 1
  assert info['batching']['batches'] == 3


def test_generate_over_http(gpt_export):
  generator = load(gpt_export)
  app = make_app(generator, max_batch=4, max_wait_ms=_FOREVER_MS,
                 batch_sizes=(4,))
  prompts = ['And God', 'In the', 'the LORD said', 'And God']
  bodies = [{'prompt': p, 'temperature': 0} for p in prompts[:3]] + [
      {'prompt': prompts[3], 'temperature': 1.0, 'top_k': 5, 'seed': 5}]
  with _serving(app) as url:
    bad = [httpx.post(url + '/v1/generate', json=b) for b in (
        {'prompt': 'J\u00e9sus'}, {'prompt': 'a' * 20}, {'text': 'a'},
        {'prompt': 'a', 'max_new_tokens': 99}, {'prompt': 3})]
    wrong_endpoint = httpx.post(url + '/v1/predict', json={'inputs': ['a']})
    responses = asyncio.run(_post_all(url, '/v1/generate', bodies))
    info = httpx.get(url + '/v1/model').json()
  assert [r.status_code for r in bad + [wrong_endpoint]] == [400] * 6
  assert [r.json()['error'] for r in bad + [wrong_endpoint]] == [
      "the prompt has characters the model never saw in training ('\u00e9'); "
      'leave them out',
      'the prompt is 20 tokens; this model takes at most 15',
      'unknown field(s) text; this endpoint takes max_new_tokens, prompt, '
      'seed, temperature, top_k, top_p',
      'max_new_tokens must be 1 to 8, got 99',
      'a prompt must be a string, not int',
      'this model generates text; POST /v1/generate']
  out = [r.json() for r in responses]
  assert [o['batch'] for o in out] == [
      {'id': 0, 'rows': 4, 'requests': 4, 'padded_to': 4}] * 4
  # Prompts of three lengths in one batch, each continued as alone.
  assert [o['completion'] for o in out] == [
      generator([p], temperature=0.0)[0] for p in prompts[:3]] + generator(
          [prompts[3]], temperature=1.0, top_k=5, seed=5)
  assert out[3]['seed'] == 5 and 0 <= out[0]['seed'] < 2**32
  assert info['batching']['batch_rows'] == {'4': 1}
  assert info['model']['kind'] == 'generator'


@pytest.mark.parametrize('rows, taken', [
    ([1] * 70, 64), ([1] * 63, 63), ([1] * 40, 32), ([1] * 20, 16),
    ([1] * 7, 7), ([1] * 5, 4), ([3], 3), ([3, 3], 6), ([3, 2, 40], 5),
])
def test_a_batch_pads_at_most_a_quarter(rows, taken):
  batcher = server_lib.DynamicBatcher(
      lambda rows, size: rows, max_batch=64, max_wait_ms=0, max_queue=1000,
      batch_sizes=server_lib.default_batch_sizes(64))
  assert batcher.batch_sizes == (1, 2, 4, 8, 16, 32, 64)
  for n in rows:
    batcher._pending.append(server_lib._Pending([0] * n, None, 0.0))  # pylint: disable=protected-access
    batcher._queued_rows += n  # pylint: disable=protected-access
  batch = batcher._take()  # pylint: disable=protected-access
  assert sum(len(p.rows) for p in batch) == taken
  assert batcher.queued == sum(rows) - taken
