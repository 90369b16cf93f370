"""What every CLI that takes a config file shares: absl flag parsing with
each user mistake reduced to one `error:` line (experiments.run and
experiments.sweep parse the same --config and --config.KEY=VALUE)."""

import os
import re
import sys
import traceback

from absl import flags


def error_line(message) -> str:
  return 'error: ' + ' '.join(str(message).split())


def fail(message):
  sys.exit(error_line(message))


def config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':', 1)[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return None


def config_file_error(path: str, e: BaseException,
                       message: str | None = None) -> str:
  """'config file F line N: ExcType: message' for an exception raised while
  loading the config file `path` (SyntaxError, NameError, ImportError...)."""
  line = getattr(e, 'lineno', None) if isinstance(e, SyntaxError) else None
  if line is None:
    for frame in traceback.extract_tb(e.__traceback__):
      if os.path.abspath(frame.filename) == os.path.abspath(path):
        line = frame.lineno
  where = f'config file {path}' + (f' line {line}' if line else '')
  if message is None:
    message = e.msg if isinstance(e, SyntaxError) else str(e)
  return (f'{where} did not load: {type(e).__name__}: {message}; fix the '
          'file')


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, with every user mistake reduced to one clear line."""
  path = config_path(argv)
  if path is not None and not os.path.isfile(path):
    fail(f'config file {path} not found; pass '
          '--config=experiments/configs/NAME.py')
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if 'Error whilst parsing config file' in str(e):
      # ml_collections puts get_config()'s whole traceback in the message;
      # its last line is the exception, the file's own frame its line.
      cause = str(e).strip().splitlines()[-1].strip()
      lines = re.findall(rf'File "{re.escape(os.path.abspath(path))}", '
                         r'line (\d+)', str(e)) if path else []
      where = f' line {lines[-1]}' if lines else ''
      fail(f'config file {path}{where} did not load: {cause}; fix the '
            'file, or the argument after its `:`')
    fail(f'{e}; see --helpfull for the flags')
  except AttributeError as e:
    # ml_collections: an override of a field the config does not have.
    hint = str(e).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
    if 'get_config' in hint:
      fail(f'config file {path} has no get_config(); define '
            'get_config() returning an ml_collections.ConfigDict')
    if not any(a.startswith('--config.') for a in argv):
      # No override: get_config() itself read a missing attribute.
      fail(config_file_error(path, e, hint))
    fail(f'config has no field {hint}; overrides must name existing fields')
  except KeyError as e:
    # ml_collections: an override below a field the config does not have
    # (`--config.modle.x=1`); str() of a KeyError is its message's repr.
    if path and any(os.path.abspath(f.filename) == os.path.abspath(path)
                    for f in traceback.extract_tb(e.__traceback__)):
      fail(config_file_error(path, e))
    fail(f'config has no field {e.args[0] if e.args else e}; overrides must '
          'name existing fields')
  except (TypeError, ValueError) as e:
    if path and any(os.path.abspath(f.filename) == os.path.abspath(path)
                    for f in traceback.extract_tb(e.__traceback__)):
      fail(config_file_error(path, e))
    fail(f'bad config override: {e}')
  except Exception as e:  # pylint: disable=broad-except
    # The config file itself raised while it was imported or ran.
    fail(config_file_error(path or '?', e))
