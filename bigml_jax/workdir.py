"""The run's directory: created and probed, locked to one run, and written
only whole.

Every file a run writes outside its checkpoints goes through here or appends
whole lines (metrics.jsonl), so a full disk or a kill never leaves a
half-written config or tokenizer: `write_atomically` writes a private
temporary file and renames it over the target.

One run per workdir: process 0 holds `workdir/.lock` (host, pid, start
time) for the run's lifetime. A second run refuses to start; a lock left by a
process that died on this host is taken over with a warning.
"""

import errno
import json
import os
import socket
import time
import uuid

from absl import logging

from bigml_jax.errors import ConfigError

LOCK_FILE = '.lock'
# What the write probe writes: enough that a full disk fails it, not only a
# disk without free inodes.
_PROBE_BYTES = 4096


class WorkdirError(OSError):
  """The workdir cannot be written (no space, permissions, ...): one line
  that names it and the fix."""


def reason(e: OSError) -> str:
  """The OS's words for `e` ('No space left on device'), or its message."""
  return e.strerror or str(e) or type(e).__name__


def write_atomically(path: str, content: str | bytes) -> None:
  """Writes `content` to `path` all-or-nothing: a private temporary file in
  the same directory, flushed, then renamed over `path`. On failure the
  temporary is removed and `path` is as it was."""
  tmp = os.path.join(os.path.dirname(path) or '.',
                     f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  try:
    with open(tmp, 'wb' if isinstance(content, bytes) else 'w') as f:
      f.write(content)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def make(workdir: str, process_index: int = 0) -> tuple[str, bool]:
  """(absolute path, whether this call created it), after proving that the
  directory takes bytes: a probe file is written, flushed and removed."""
  if '://' in str(workdir):
    # Config, metrics and image files go through the local file API, which
    # would make a local directory named after the URL.
    raise ConfigError(
        f'workdir {workdir}: URL workdirs are not supported yet; pass a '
        'directory every host sees: an NFS share, or the bucket mounted on '
        'every host (gcsfuse --implicit-dirs --rename-dir-limit=200000 '
        'BUCKET /mnt/BUCKET) and --workdir=/mnt/BUCKET/...')
  workdir = os.path.abspath(os.path.expanduser(str(workdir)))
  created = not os.path.exists(workdir)
  probe = os.path.join(workdir, f'.write_test_{process_index}')
  try:
    os.makedirs(workdir, exist_ok=True)
    try:
      with open(probe, 'wb') as f:
        f.write(b'\0' * _PROBE_BYTES)
        f.flush()
        os.fsync(f.fileno())
    finally:
      if os.path.exists(probe):
        os.remove(probe)
  except OSError as e:
    if created:
      remove_empty_dirs(workdir)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      raise WorkdirError(e.errno, f'workdir {workdir} has no space left '
                         f'({reason(e)}); free disk space or pass another '
                         '--workdir') from None
    raise ConfigError(f'workdir {workdir} cannot be written ({reason(e)}); '
                      'pass a --workdir you can write to') from None
  return workdir, created


def remove_empty_dirs(top: str) -> None:
  """Removes `top` and the directories under it, if they hold no file."""
  for root, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(root)  # Fails, and so keeps it, unless it is empty.
    except OSError:
      pass


def _process_start_ticks(pid: int) -> int | None:
  """The kernel's start time of `pid` (clock ticks since boot), which tells
  a live process from a later one that reuses its pid; None if unknown."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # The command name (field 2) may hold spaces; fields after it do not.
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(owner: dict) -> bool:
  pid = owner.get('pid')
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Someone else's live process.
  ticks = _process_start_ticks(pid)
  return ticks is None or owner.get('start_ticks') in (None, ticks)


class Lock:
  """`workdir/.lock` held for a run's lifetime (a context manager).

  The file is created exclusively (O_EXCL) and records host, pid and start
  time. A lock whose process is gone from this host is taken over with a
  warning; one held by a live process, or by another host (whose processes
  cannot be checked from here), is a ConfigError naming the holder.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._held = False

  def _owner(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}  # Being written, or a half-written lock of a killed run.

  def acquire(self) -> None:
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'start_ticks': _process_start_ticks(os.getpid()),
          'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._owner()
        if owner.get('host') == me['host'] and not _alive(owner):
          logging.warning('taking over %s: its run (pid %s, started %s) is '
                          'gone', self.path, owner.get('pid', '?'),
                          owner.get('started', '?'))
          os.remove(self.path)
          continue
        if not owner:
          raise ConfigError(
              f'workdir {os.path.dirname(self.path)} is locked by a run '
              f'that is starting or was killed ({self.path} is empty); if '
              f'no run uses this workdir, remove {self.path}')
        raise ConfigError(
            f'workdir {os.path.dirname(self.path)} is in use by another run '
            f'(host {owner.get("host")}, pid {owner.get("pid")}, started '
            f'{owner.get("started")}); wait for it to end, or pass another '
            f'--workdir (if that run is gone, remove {self.path})')
      try:
        os.write(fd, json.dumps(me).encode() + b'\n')
        os.fsync(fd)
      except OSError as e:
        os.close(fd)
        os.remove(self.path)
        raise WorkdirError(e.errno, f'workdir {os.path.dirname(self.path)} '
                           f'cannot be written ({reason(e)}); free disk '
                           'space or pass another --workdir') from None
      os.close(fd)
      self._held = True
      return
    raise ConfigError(f'could not take {self.path}: another run took it '
                      'first; pass another --workdir')

  def release(self) -> None:
    if self._held:
      self._held = False
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> 'Lock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
