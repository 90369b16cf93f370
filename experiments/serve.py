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

import os
import sys

from bigml_jax import host

_RESTARTED = 'BIGML_JAX_SERVE_RESTARTED'
if __name__ == '__main__' and not os.environ.get(_RESTARTED):
  # XLA:CPU allocates each call's temporaries afresh: in huge pages they do
  # not fault in 4 KB at a time (bigml_jax/host.py; BERT's batches of 64
  # ran 2x faster). glibc reads the setting only at start-up: restart once.
  _ENVIRON = host.environ_for_run(os.environ)
  if _ENVIRON is not None:
    _ENVIRON[_RESTARTED] = '1'
    try:
      os.execve(sys.executable, sys.orig_argv, _ENVIRON)
    except OSError:
      pass  # Serve on without: it costs speed, not answers.

# pylint: disable=g-import-not-at-top,wrong-import-position
import socket
import time

from absl import app
from absl import flags
from absl import logging
import uvicorn

from bigml_jax import serving
from bigml_jax.errors import ConfigError
from bigml_jax.serving import server as server_lib

FLAGS = flags.FLAGS


def _define_flags():
  """The flags, defined when run as a program only: tests import its
  functions beside other CLIs that use the same names."""
  flags.DEFINE_string('model', None, 'Directory written by '
                      'python -m experiments.export.')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on '
                      '(0.0.0.0: every interface).')
  flags.DEFINE_integer('port', 8000, 'Port to listen on.')
  flags.DEFINE_integer('max_batch', 64, 'Most rows per model call '
                       '(1: no batching).')
  flags.DEFINE_float('max_wait_ms', 0.0, 'Longest a request '
                     'waits for others to join its batch (0: a batch '
                     'starts when the model is free; what arrives while it '
                     'runs forms the next).')
  flags.DEFINE_list('batch_sizes', None, 'Sizes batches are '
                    'padded to (default 1, 4, 16, ..., '
                    'max_batch).')
  flags.DEFINE_integer('max_queue', None, 'Rows waiting before '
                       'requests get 503 (default 4 x max_batch).')
  flags.mark_flags_as_required(['model'])


def _options() -> dict:
  if FLAGS.max_batch < 1 or FLAGS.max_wait_ms < 0 or (
      FLAGS.max_queue is not None and FLAGS.max_queue < FLAGS.max_batch):
    raise ConfigError('--max_batch must be >= 1, --max_wait_ms >= 0 and '
                      '--max_queue >= max_batch')
  sizes = None
  if FLAGS.batch_sizes:
    try:
      sizes = sorted({int(s) for s in FLAGS.batch_sizes})
    except ValueError:
      raise ConfigError(f'--batch_sizes takes integers, got '
                        f'{",".join(FLAGS.batch_sizes)}') from None
    if sizes[0] < 1 or sizes[-1] != FLAGS.max_batch:
      raise ConfigError(f'--batch_sizes must be >= 1 and end at --max_batch '
                        f'{FLAGS.max_batch}, got {",".join(map(str, sizes))}')
  return dict(max_batch=FLAGS.max_batch, max_wait_ms=FLAGS.max_wait_ms,
              max_queue=FLAGS.max_queue, batch_sizes=sizes)


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
    sock = _listen(FLAGS.host, FLAGS.port)
    model = serving.load(FLAGS.model)
  except ConfigError as e:
    sys.exit('error: ' + ' '.join(str(e).split()))
  start = time.time()
  app_ = server_lib.make_app(model, **options)
  batcher = app_.state.batcher
  logging.info('serving %s (%s) on http://%s:%d; batch sizes %s compiled in '
               '%.1f s, max wait %.1f ms, 503 past %d queued rows',
               model.export_dir, model.kind, FLAGS.host,
               sock.getsockname()[1],
               ','.join(map(str, batcher.batch_sizes)), time.time() - start,
               batcher.max_wait * 1000, batcher.max_queue)
  server = uvicorn.Server(uvicorn.Config(app_, log_level='warning',
                                         access_log=False))
  server.run(sockets=[sock])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
