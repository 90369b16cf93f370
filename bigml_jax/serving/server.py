"""An exported model over HTTP (Starlette on uvicorn), dynamically batched.

  POST /v1/predict   {"inputs": [x, ...]}: images as nested lists of
                     numbers or {"b64": PNG, JPEG or .npy bytes}, or texts
                     -> {"predictions": [{"label", "index", "probabilities"}],
                         "batch": {...}}
  POST /v1/generate  {"prompt": str, "max_new_tokens", "temperature",
                     "top_k", "top_p", "seed" (all optional but the prompt)}
                     -> {"completion", "seed", "batch": {...}}
  GET  /healthz      {"status": "ok"}
  GET  /v1/model     the artifact's manifest, the batching settings, the
                     shapes compiled and counters of what was served

Requests wait in one bounded queue; a worker takes up to `max_batch` rows
once the oldest has waited `max_wait_ms` (or at once when that many are
waiting), pads them to one of `batch_sizes` (`DynamicBatcher._take` says
how much it pads) and runs the model on a thread of its own, while the
event loop goes on accepting; what arrives meanwhile forms the next batch. Every batch size is compiled before the server listens, so
nothing compiles under load. A request is checked whole before it joins
the queue: a bad one is answered 400 with one line and never reaches a
batch; a full queue answers 503. `"batch"` in a response says which batch
served it: its id, its rows and requests, and the size it was padded to.
"""

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bigml_jax.serving import artifact
from bigml_jax.serving import inputs as inputs_lib
from bigml_jax.serving.inputs import InputError

DEFAULT_MAX_BODY_BYTES = 4 << 20


def default_batch_sizes(max_batch: int) -> tuple[int, ...]:
  """1, 2, 4, ... below max_batch, and max_batch: a few shapes to compile."""
  sizes, size = [], 1
  while size < max_batch:
    sizes.append(size)
    size *= 2
  return tuple(sizes) + (max_batch,)


class Overloaded(Exception):
  """The queue is full: the request was not taken (HTTP 503)."""


@dataclasses.dataclass
class _Pending:
  rows: list[Any]
  future: asyncio.Future
  arrived: float


class DynamicBatcher:
  """Gathers submitted rows into batches for `run_batch(rows, size)`, which
  returns one output per row after padding the rows to `size` (one of
  `batch_sizes`). A request's rows always run in one batch."""

  def __init__(self, run_batch: Callable[[list[Any], int], list[Any]], *,
               max_batch: int, max_wait_ms: float, max_queue: int,
               batch_sizes: Sequence[int]):
    if sorted(batch_sizes)[-1] != max_batch:
      raise ValueError(f'the largest batch size must be max_batch '
                       f'{max_batch}, got {sorted(batch_sizes)}')
    self.run_batch = run_batch
    self.max_batch, self.max_queue = max_batch, max_queue
    self.max_wait = max_wait_ms / 1000
    self.batch_sizes = tuple(sorted(set(batch_sizes)))
    self._pending: collections.deque[_Pending] = collections.deque()
    self._queued_rows = 0
    self._in_flight = 0
    self._arrival = None  # An asyncio.Event, made on the serving loop.
    self._executor = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='batch')
    self._task = None
    self.stats = {'requests': 0, 'rows': 0, 'batches': 0, 'overloaded': 0,
                  'batch_rows': collections.Counter(),
                  'padded_to': collections.Counter()}

  def padded_size(self, rows: int) -> int:
    return next(s for s in self.batch_sizes if s >= rows)

  def start(self) -> None:
    self._arrival = asyncio.Event()
    self._task = asyncio.get_running_loop().create_task(self._serve())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
    self._executor.shutdown(wait=True)

  async def submit(self, rows: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Queues a request's rows; returns (outputs, the batch's description).
    Raises Overloaded when `max_queue` rows are already waiting."""
    if not 0 < len(rows) <= self.max_batch:
      raise ValueError(f'a request has 1 to {self.max_batch} rows')
    if self._queued_rows + len(rows) > self.max_queue:
      self.stats['overloaded'] += 1
      raise Overloaded(f'the server is overloaded ({self._queued_rows} rows '
                       'queued); retry later')
    future = asyncio.get_running_loop().create_future()
    self._pending.append(_Pending(rows, future, time.monotonic()))
    self._queued_rows += len(rows)
    self._arrival.set()
    return await future

  @property
  def queued(self) -> int:
    return self._queued_rows

  @property
  def in_flight(self) -> int:
    return self._in_flight

  async def _serve(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      while not self._pending:
        self._arrival.clear()
        await self._arrival.wait()
      deadline = self._pending[0].arrived + self.max_wait
      while self._queued_rows < self.max_batch:
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._arrival.clear()
        try:
          await asyncio.wait_for(self._arrival.wait(), left)
        except asyncio.TimeoutError:
          break
      batch = self._take()
      rows = [row for p in batch for row in p.rows]
      size = self.padded_size(len(rows))
      info = {'id': self.stats['batches'], 'rows': len(rows),
              'requests': len(batch), 'padded_to': size}
      self._count(info)
      self._in_flight = len(rows)
      try:
        outputs = await loop.run_in_executor(self._executor, self.run_batch,
                                             rows, size)
      except Exception as e:  # pylint: disable=broad-except
        # A failure of the model itself: each of its requests gets a 500.
        for p in batch:
          if not p.future.done():
            p.future.set_exception(e)
        continue
      finally:
        self._in_flight = 0
      start = 0
      for p in batch:
        if not p.future.done():  # Its client may have gone.
          p.future.set_result((outputs[start:start + len(p.rows)], info))
        start += len(p.rows)

  def _take(self) -> list[_Pending]:
    """The oldest requests for the next batch.

    All that fit in max_batch, padded up to the next batch size when the
    padding is at most a quarter of it; otherwise as many as fill the
    largest size below, and the rest run next, at once (their wait is over):
    a padding row costs as much as a real one.
    """
    fitting, rows = [], 0
    for p in self._pending:
      if rows + len(p.rows) > self.max_batch:
        break
      fitting.append(p)
      rows += len(p.rows)
    target = rows
    if 4 * (self.padded_size(rows) - rows) > self.padded_size(rows):
      target = max((s for s in self.batch_sizes if s <= rows), default=rows)
    batch, taken = [], 0
    for p in fitting:
      if batch and taken + len(p.rows) > target:
        break
      batch.append(p)
      taken += len(p.rows)
    for _ in batch:
      self._pending.popleft()
    self._queued_rows -= taken
    return batch

  def _count(self, info: dict[str, Any]) -> None:
    self.stats['batches'] += 1
    self.stats['requests'] += info['requests']
    self.stats['rows'] += info['rows']
    self.stats['batch_rows'][info['rows']] += 1
    self.stats['padded_to'][info['padded_to']] += 1

  def describe(self) -> dict[str, Any]:
    stats = dict(self.stats)
    for key in ('batch_rows', 'padded_to'):
      stats[key] = {str(k): v for k, v in sorted(stats[key].items())}
    return {'max_batch': self.max_batch,
            'max_wait_ms': self.max_wait * 1000,
            'max_queue': self.max_queue, 'batch_sizes': list(self.batch_sizes),
            'queued_rows': self._queued_rows, 'in_flight_rows': self._in_flight,
            **stats}


def _pad(rows: list[Any], size: int) -> list[Any]:
  return rows + [rows[0]] * (size - len(rows))  # Padding rows are discarded.


def _classifier_runner(model: artifact.Classifier):
  def run_batch(rows, size):
    out = model.logits(model.batch(_pad(rows, size)))
    return model.predictions(out['probabilities'][:len(rows)])
  return run_batch


def _generator_runner(model: artifact.Generator):
  # One shape per batch size: prefill EOS (every prompt starts with it),
  # the rest of any prompt goes through the decode steps.
  rest = model.limits['max_prompt_tokens']

  def run_batch(rows, size):
    rows = _pad(rows, size)
    new = model.generate_ids([ids for ids, _ in rows], [o for _, o in rows],
                             prefill=1, rest=rest)
    return list(new)
  return run_batch


def _warm_up(model, run_batch, batch_sizes) -> None:
  """Compiles every batch size before the first request."""
  if model.kind == 'classifier':
    spec = model.manifest['input']
    row = (np.zeros(spec['shape'], spec['dtype']) if spec['kind'] == 'image'
           else np.array([inputs_lib.EOS_ID], np.int32))
  else:
    row = (np.array([inputs_lib.EOS_ID], np.int32),
           model.options(max_new_tokens=1))
  for size in batch_sizes:
    run_batch([row], size)


class _BadRequest(Exception):
  pass


def _error(status: int, message: str, **headers) -> JSONResponse:
  return JSONResponse({'error': ' '.join(str(message).split())}, status,
                      headers=headers or None)


async def _json_body(request: Request, max_bytes: int, allowed: set[str],
                     required: set[str]) -> dict[str, Any]:
  declared = request.headers.get('content-length')
  if declared and declared.isdigit() and int(declared) > max_bytes:
    raise _BadRequest(f'the body of {declared} bytes is too large; at most '
                      f'{max_bytes}')
  body = await request.body()
  if len(body) > max_bytes:
    raise _BadRequest(f'the body of {len(body)} bytes is too large; at most '
                      f'{max_bytes}')
  try:
    data = json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    raise _BadRequest(f'the body is not JSON ({e})') from None
  if not isinstance(data, dict):
    raise _BadRequest('the body must be a JSON object')
  unknown = sorted(set(data) - allowed)
  if unknown:
    raise _BadRequest(f'unknown field(s) {", ".join(unknown)}; this endpoint '
                      f'takes {", ".join(sorted(allowed))}')
  missing = sorted(required - set(data))
  if missing:
    raise _BadRequest(f'missing field(s) {", ".join(missing)}')
  return data


def _raw_input(model: artifact.Classifier, value: Any) -> Any:
  """A JSON input -> what `Classifier.preprocess_one` takes."""
  if isinstance(value, dict):
    if set(value) != {'b64'}:
      raise InputError('an object input must be {"b64": base64 image bytes}')
    if model.manifest['input']['kind'] != 'image':
      raise InputError('this model takes texts, not images')
    return inputs_lib.decode_image_bytes(inputs_lib.decode_base64(
        value['b64']))
  if model.manifest['input']['kind'] == 'image' and not isinstance(value,
                                                                   list):
    raise InputError('an image must be nested lists of numbers or '
                     f'{{"b64": ...}}, not {type(value).__name__}')
  return value


def make_app(model: artifact.Classifier | artifact.Generator, *,
             max_batch: int = 64, max_wait_ms: float = 0.0,
             max_queue: int | None = None,
             batch_sizes: Sequence[int] | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
             warm_up: bool = True) -> Starlette:
  """The Starlette app serving `model` (from `artifact.load`).

  Args:
    model: the loaded artifact.
    max_batch: most rows (inputs or prompts) in one model call; also the
      most inputs one request may carry.
    max_wait_ms: longest a request waits for others to join its batch. At
      0 (the default, as in TF Serving and Triton) a batch starts as soon
      as the model is free, and what arrives while it runs forms the next
      one; a wait fills batches when requests come faster than the model
      takes them but slower than it runs.
    max_queue: most rows waiting before requests get 503 (default 4 x
      max_batch).
    batch_sizes: the sizes batches are padded to (default
      `default_batch_sizes(max_batch)`); the largest must be max_batch.
    max_body_bytes: larger request bodies get 400.
    warm_up: compile every batch size now (else on first use).
  """
  batch_sizes = tuple(batch_sizes or default_batch_sizes(max_batch))
  run_batch = (_generator_runner(model) if model.kind == 'generator' else
               _classifier_runner(model))
  batcher = DynamicBatcher(run_batch, max_batch=max_batch,
                           max_wait_ms=max_wait_ms,
                           max_queue=max_queue or 4 * max_batch,
                           batch_sizes=batch_sizes)
  if warm_up:
    _warm_up(model, run_batch, batcher.batch_sizes)
  rejected = collections.Counter()

  def answering(handler):
    """`handler` with its bad requests as 400 and a full queue as 503."""
    @functools.wraps(handler)
    async def answer(request: Request) -> JSONResponse:
      try:
        return await handler(request)
      except _BadRequest as e:
        rejected[400] += 1
        return _error(400, e)
      except Overloaded as e:
        rejected[503] += 1
        return _error(503, e, **{'Retry-After': '1'})
    return answer

  @answering
  async def predict(request: Request) -> JSONResponse:
    if model.kind != 'classifier':
      raise _BadRequest('this model generates text; POST /v1/generate')
    body = await _json_body(request, max_body_bytes, {'inputs'}, {'inputs'})
    values = body['inputs']
    if not isinstance(values, list) or not values:
      raise _BadRequest('"inputs" must be a non-empty list')
    if len(values) > max_batch:
      raise _BadRequest(f'{len(values)} inputs are too many; at most '
                        f'{max_batch} per request')
    rows = []
    for i, value in enumerate(values):
      try:
        rows.append(model.preprocess_one(_raw_input(model, value)))
      except InputError as e:
        raise _BadRequest(f'input {i}: {e}') from None
    predictions, info = await batcher.submit(rows)
    return JSONResponse({'predictions': predictions, 'batch': info})

  @answering
  async def generate(request: Request) -> JSONResponse:
    if model.kind != 'generator':
      raise _BadRequest('this model classifies; POST /v1/predict')
    body = await _json_body(
        request, max_body_bytes, {'prompt', 'max_new_tokens', 'temperature',
                                  'top_k', 'top_p', 'seed'}, {'prompt'})
    options = {k: v for k, v in body.items() if k != 'prompt'}
    options.setdefault('seed', secrets.randbits(32))
    try:
      ids = model.encode_prompt(body['prompt'])
      options = model.options(**options)
    except InputError as e:
      raise _BadRequest(str(e)) from None
    (new,), info = await batcher.submit([(ids, options)])
    return JSONResponse({
        'completion': model.completion(body['prompt'], ids, new),
        'seed': options['seed'], 'batch': info})

  async def healthz(request: Request) -> JSONResponse:
    del request
    return JSONResponse({'status': 'ok'})

  async def describe(request: Request) -> JSONResponse:
    del request
    return JSONResponse({
        'model': model.info, 'runtime': artifact.runtime_versions(),
        'batching': batcher.describe(),
        'rejected': {str(k): v for k, v in sorted(rejected.items())}})

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    batcher.start()
    yield
    await batcher.stop()

  app = Starlette(routes=[
      Route('/v1/predict', predict, methods=['POST']),
      Route('/v1/generate', generate, methods=['POST']),
      Route('/healthz', healthz, methods=['GET']),
      Route('/v1/model', describe, methods=['GET']),
  ], lifespan=lifespan)
  app.state.batcher = batcher
  return app
