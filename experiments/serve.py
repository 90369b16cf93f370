"""Serves an exported model over HTTP, batching requests dynamically.

  python -m experiments.serve --model=/tmp/bigml/default_export --port=8000

  curl -s localhost:8000/v1/predict -d '{"inputs": [[[0, 0, 80, ...], ...]]}'
  curl -s localhost:8000/v1/generate -d '{"prompt": "And God said"}'
  curl -s localhost:8000/v1/model

Endpoints and request formats: bigml_jax/serving/server.py. Up to
--max_batch rows run in one model call, after the oldest has waited at most
--max_wait_ms; batches are padded to --batch_sizes, each compiled before the
server listens. With more than --max_queue rows waiting, requests get 503.
Mistakes (no artifact, a port in use) end in one line on stderr
("error: ...") and exit code 1.
"""

import socket
import sys
import time

from absl import app
from absl import flags
from absl import logging
import uvicorn

from bigml_jax import serving
from bigml_jax.errors import ConfigError
from bigml_jax.serving import server as server_lib

_MODEL = flags.DEFINE_string('model', None, 'Directory written by '
                             'python -m experiments.export.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on '
                            '(0.0.0.0: every interface).')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 64, 'Most rows per model call '
                                  '(1: no batching).')
_MAX_WAIT_MS = flags.DEFINE_float('max_wait_ms', 5.0, 'Longest a request '
                                  'waits for others to join its batch.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', None, 'Sizes batches are '
                                 'padded to (default 1, 4, 16, ..., '
                                 'max_batch).')
_MAX_QUEUE = flags.DEFINE_integer('max_queue', None, 'Rows waiting before '
                                  'requests get 503 (default 4 x max_batch).')
flags.mark_flags_as_required(['model'])


def _options() -> dict:
  if _MAX_BATCH.value < 1 or _MAX_WAIT_MS.value < 0 or (
      _MAX_QUEUE.value is not None and _MAX_QUEUE.value < _MAX_BATCH.value):
    raise ConfigError('--max_batch must be >= 1, --max_wait_ms >= 0 and '
                      '--max_queue >= max_batch')
  sizes = None
  if _BATCH_SIZES.value:
    try:
      sizes = sorted({int(s) for s in _BATCH_SIZES.value})
    except ValueError:
      raise ConfigError(f'--batch_sizes takes integers, got '
                        f'{",".join(_BATCH_SIZES.value)}') from None
    if sizes[0] < 1 or sizes[-1] != _MAX_BATCH.value:
      raise ConfigError(f'--batch_sizes must be >= 1 and end at --max_batch '
                        f'{_MAX_BATCH.value}, got {",".join(map(str, sizes))}')
  return dict(max_batch=_MAX_BATCH.value, max_wait_ms=_MAX_WAIT_MS.value,
              max_queue=_MAX_QUEUE.value, batch_sizes=sizes)


def _listen(host: str, port: int) -> socket.socket:
  try:
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Connections wait in the backlog from now on, before uvicorn runs.
    sock.listen(2048)
  except OSError as e:
    raise ConfigError(f'cannot listen on {host}:{port} ({e.strerror}); pick '
                      'another --port or --host') from None
  return sock


def main(argv):
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  try:
    options = _options()
    sock = _listen(_HOST.value, _PORT.value)
    model = serving.load(_MODEL.value)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  start = time.time()
  app_ = server_lib.make_app(model, **options)
  batcher = app_.state.batcher
  logging.info('serving %s (%s) on http://%s:%d; batch sizes %s compiled in '
               '%.1f s, max wait %.1f ms, 503 past %d queued rows',
               model.export_dir, model.kind, _HOST.value,
               sock.getsockname()[1],
               ','.join(map(str, batcher.batch_sizes)), time.time() - start,
               batcher.max_wait * 1000, batcher.max_queue)
  server = uvicorn.Server(uvicorn.Config(app_, log_level='warning',
                                         access_log=False))
  server.run(sockets=[sock])


if __name__ == '__main__':
  app.run(main)
