"""Orbax checkpoints: one directory per step holding the train state, the data
iterator's position and run metadata, saved asynchronously.

A half-written save never looks like a checkpoint (Orbax writes to a temporary
directory and renames it when complete; on filesystems without an atomic
directory rename, such as gcsfuse, a commit file marks it complete instead).
Before it is committed, the size and CRC-32 of every file of the save are
recorded in its `checksums.json`. On restore the files are checked against
it first: proven damage (a changed byte, a truncated or missing file, a
recorded step that is not the directory's) moves the step aside to
`corrupt-STEP-TIME` with a warning and the previous step is restored. Any
other failure to read (an I/O error, too little memory) is a RestoreError
that touches nothing; so is a checkpoint whose shapes do not fit the model
(a ConfigError naming the parameter).

Restoring goes through an abstract target whose `ShapeDtypeStruct`s carry the
*current* shardings, so a checkpoint written on 8 devices restores onto 1 or
onto another mesh layout (Orbax reshards while reading).
"""

import errno
import json
import os
import re
import time
import zlib
from typing import Any

from absl import logging
from etils import epath
import flax.linen as nn
import flax.traverse_util
import jax
import orbax.checkpoint as ocp
try:  # Orbax's own; not exported (see _without_replica_parallel_on_cpu).
  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.metadata import array_metadata_store
  from orbax.checkpoint._src.serialization import type_handler_registry
except ImportError:  # Another Orbax layout: its default handler is kept.
  array_metadata_store = type_handler_registry = None

from bigml_jax.errors import ConfigError, listing

CHECKSUMS_FILE = 'checksums.json'
# Orbax's own step-level files, some rewritten after a save is committed.
_ITEMS = ('state', 'data', 'metadata')
_TMP_SUFFIX = '.orbax-checkpoint-tmp'
_COMMIT_FILE = 'commit_success.txt'


class SaveError(OSError):
  """A checkpoint could not be written (disk full, permissions, ...)."""


class RestoreError(RuntimeError):
  """A checkpoint could not be read, though not proven damaged (an I/O
  error, too little memory, a directory other hosts do not see), or every
  checkpoint is damaged. Nothing was changed."""


_OS_ERROR = re.compile(r'\[Errno (\d+)\] ([^:\];,\n]+)')


def first_line(e: BaseException) -> str:
  """The cause of `e` in one line, keeping the OS's reason (e.g. 'No space
  left on device') wherever in the chain or the message it is."""
  seen = e
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror + (f': {seen.filename}' if seen.filename else '')
    seen = seen.__cause__ or seen.__context__
  found = _OS_ERROR.search(str(e))
  if found:
    return found.group(2).strip()
  for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
    if os.strerror(code) in str(e):
      return os.strerror(code)
  lines = [l for l in str(e).splitlines() if l.strip()]
  return (lines[-1] if lines else type(e).__name__)[:300]


def _on_fuse(directory: str) -> bool:
  """Whether `directory` is on a FUSE filesystem (gcsfuse, ...), where a
  directory rename is not atomic."""
  try:
    with open('/proc/mounts') as f:
      mounts = [line.split() for line in f]
  except OSError:
    return False
  directory = os.path.realpath(directory)
  best = ('', '')
  for fields in mounts:
    if len(fields) > 2 and (directory == fields[1] or directory.startswith(
        fields[1].rstrip('/') + '/')) and len(fields[1]) > len(best[0]):
      best = (fields[1], fields[2])
  return best[1].startswith('fuse')


def _crc32(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      crc = zlib.crc32(chunk, crc)
  return crc


def _item_files(step_dir: str) -> list[str]:
  files = []
  for item in _ITEMS:
    for root, _, names in os.walk(os.path.join(step_dir, item)):
      files += [os.path.relpath(os.path.join(root, n), step_dir)
                for n in names]
  return sorted(files)


def _uncommitted_step(directory: str, name: str, fuse: bool) -> bool:
  """Whether `name` in `directory` is a step being saved: its temporary
  directory, or on FUSE (committed by a file) a step without that file."""
  step = name.split('.')[0]
  if not step.isdigit():
    return False
  if not fuse:
    return name == step + _TMP_SUFFIX
  return name == step and not os.path.exists(
      os.path.join(directory, name, _COMMIT_FILE))


def write_checksums(step_dir: str, step: int) -> None:
  """Records the size and CRC-32 of every file of the items in `step_dir`
  in its checksums.json (written whole, then renamed into place)."""
  files = {rel: [os.path.getsize(os.path.join(step_dir, rel)),
                 _crc32(os.path.join(step_dir, rel))]
           for rel in _item_files(step_dir)}
  tmp = os.path.join(step_dir, CHECKSUMS_FILE + '.tmp')
  with open(tmp, 'w') as f:
    json.dump({'step': step, 'files': files}, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, CHECKSUMS_FILE))


def find_damage(step_dir: str) -> str | None:
  """What is proven wrong with the checkpoint in `step_dir` (a file whose
  size or CRC-32 differs from checksums.json, a missing file, a recorded
  step that is not the directory's), or None: intact, or without
  checksums (a checkpoint of an older version), so nothing is proven.

  An OSError while reading is not proof of damage and propagates."""
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      recorded = json.load(f)
    files, step = recorded['files'], recorded['step']
  except (ValueError, KeyError, TypeError):
    return f'{CHECKSUMS_FILE} is malformed'
  if str(step) != os.path.basename(step_dir):
    return f'it records step {step}'
  for rel, (size, crc) in sorted(files.items()):
    full = os.path.join(step_dir, rel)
    if not os.path.exists(full):
      return f'{rel} is missing'
    if os.path.getsize(full) != size:
      return f'{rel} has {os.path.getsize(full)} bytes, not {size}'
    if _crc32(full) != crc:
      return f'{rel} does not match its checksum'
  return None


def _best_options(keep_best: dict | None) -> dict[str, Any]:
  """CheckpointManagerOptions that track `keep_best` = {metric, mode}: the
  metrics saved with a step (`save(..., metrics=)`) rank it."""
  if not keep_best or not keep_best.get('metric'):
    return {}
  metric = keep_best['metric']
  return {'best_fn': lambda metrics: metrics[metric],
          'best_mode': keep_best.get('mode', 'max')}


_CPU_ARRAY_HANDLER = []  # The one registered in this process, once.


def _without_replica_parallel_on_cpu() -> None:
  """On CPU, arrays are saved whole by the first replica. Orbax's default
  splits a replicated array among its replicas, which pays off where they
  are hosts with their own links to storage; CPU devices share one host,
  and the split costs a compiled slice per array shape at a run's first
  save (seconds for a small ViT on 8 devices). Registered once per process
  (Orbax's registry is global), quietly: Orbax warns of every override."""
  if (_CPU_ARRAY_HANDLER or type_handler_registry is None or
      jax.default_backend() != 'cpu'):
    return
  try:
    handler = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=False,
        array_metadata_store=array_metadata_store.Store())  # As Orbax's.
    type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(
        jax.Array, handler, override=True, ignore_warnings=True)
  except (TypeError, AttributeError):  # Another Orbax: its default stays.
    handler = None
  _CPU_ARRAY_HANDLER.append(handler)


def make_manager(directory: str, max_to_keep: int,
                 keep_best: dict | None = None) -> ocp.CheckpointManager:
  """A CheckpointManager in `directory` (created), async, keeping the last
  `max_to_keep` steps and, with `keep_best` = {metric, mode}, also the
  best-scoring of the steps saved with metrics; each save records its
  checksums before it is committed (see `write_checksums`)."""
  _without_replica_parallel_on_cpu()
  directory = os.path.abspath(directory)
  fuse = _on_fuse(os.path.dirname(directory) or directory)

  def record_checksums():
    # Runs in Orbax's save thread on the primary host, after every file is
    # written and before the step is committed. Saves run one at a time, so
    # the one uncommitted step directory is this save's.
    (step_dir,) = [os.path.join(directory, d) for d in os.listdir(directory)
                   if _uncommitted_step(directory, d, fuse)]
    write_checksums(step_dir, int(os.path.basename(step_dir).split('.')[0]))

  best = _best_options(keep_best)
  if best:
    keep = {'preservation_policy': ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(n=max_to_keep),
         ocp.checkpoint_managers.BestN(
             get_metric_fn=best['best_fn'],
             reverse=best['best_mode'] == 'min', n=1,
             keep_checkpoints_without_metrics=False)]), **best}
  else:
    keep = {'max_to_keep': max_to_keep}
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=True, create=True,
      cleanup_tmp_directories=True, **keep,
      async_options=ocp.options.AsyncOptions(
          post_finalization_callback=record_checksums),
      temporary_path_class=(ocp.path.atomicity.CommitFileTemporaryPath
                            if fuse else None))
  # Declaring the items lets metadata be read before any save or restore.
  handlers = {'state': ocp.StandardCheckpointHandler(),
              'data': ocp.JsonCheckpointHandler(),
              'metadata': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options,
                               item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict[str, Any] | None = None,
         metadata: dict[str, Any] | None = None,
         metrics: dict[str, float] | None = None) -> bool:
  """Starts an async save of step `step`; returns whether one was started.

  `data_state` (the input iterator's position) and `metadata` are JSON
  dicts restored alongside the state; both default to {}. `metrics` (eval
  metrics) rank the step for a manager made with keep_best.

  Every process must call this (saving is collective); the arrays are copied
  off device before it returns, so the caller may donate `state` right after.
  Raises SaveError if this save, or the previous async one, failed.
  """
  try:
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        metadata=ocp.args.JsonSave(metadata or {})), force=True,
        metrics=metrics)
  except Exception as e:  # pylint: disable=broad-except
    raise SaveError(_save_failed(manager, e)) from e


def _save_failed(manager, e: Exception) -> str:
  kept = ', '.join(str(s) for s in manager.all_steps()) or 'none'
  return (f'saving a checkpoint in {manager.directory} failed '
          f'({first_line(e)}); the complete checkpoints ({kept}) are intact: '
          'free disk space and rerun the same command to resume')


def wait(manager: ocp.CheckpointManager) -> None:
  """Blocks until async saves have landed; SaveError if one failed."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise SaveError(_save_failed(manager, e)) from e


def close(manager: ocp.CheckpointManager, *, after_error: bool = False
          ) -> None:
  """Waits for async saves, then stops the manager's threads.

  SaveError if a save failed; with `after_error` (the caller is already
  failing) that failure is logged instead, so it does not hide the first.
  """
  try:
    wait(manager)
  except SaveError as e:
    if not after_error:
      manager.close()
      raise
    logging.warning('%s', e)
  manager.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that tell Orbax where each restored array must live."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, target: Any
            ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
  """Restores (state, data_state, metadata) of `step` onto `target`'s
  shapes, dtypes and shardings (see `abstract_with_shardings`)."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      data=ocp.args.JsonRestore(),
      metadata=ocp.args.JsonRestore()))
  return restored.state, restored.data, restored.metadata


def _path_str(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def _stored_shape(x) -> tuple[int, ...]:
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    # A typed key (jax.random.key) is stored as its key data: (2,) more.
    return tuple(jax.eval_shape(jax.random.key_data, x).shape)
  return tuple(x.shape)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {_path_str(p): _stored_shape(x) for p, x in leaves
          if hasattr(x, 'shape')}


def check_fits(manager: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Raises ConfigError naming the first parameter whose saved shape differs
  from the model's (or that only one of them has)."""
  saved = _shapes(manager.item_metadata(step)['state'].tree)
  wanted = _shapes(target)
  # Parameters first: the optimizer state mirrors them.
  for name in sorted(set(saved) | set(wanted),
                     key=lambda n: (not n.startswith('params'), n)):
    if saved.get(name) != wanted.get(name):
      raise ConfigError(
          f'checkpoint step {step} in {manager.directory} does not fit the '
          f'model: {name} is {saved.get(name, "absent")} in the checkpoint '
          f'but {wanted.get(name, "absent")} in the model; use a new --workdir '
          'or the config that wrote this one')


def _move_aside(manager: ocp.CheckpointManager, step: int) -> None:
  directory = os.fspath(manager.directory)
  if jax.process_index() == 0:
    os.rename(os.path.join(directory, str(step)),
              os.path.join(directory, f'corrupt-{step}-{int(time.time())}'))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f'corrupt checkpoint {step}')
  manager.reload()


def _agreed_damage(step_dir: str) -> str | None:
  """`find_damage` as process 0 sees it, on every process: all of them
  must move the same steps aside and restore the same one."""
  damage = error = None
  if jax.process_index() == 0:
    try:
      damage = find_damage(step_dir)
    except OSError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    text = json.dumps([damage, error and first_line(error)]).encode()
    buf = np.zeros(4096, np.uint8)
    buf[:len(text[:4096])] = np.frombuffer(text[:4096], np.uint8)
    agreed = multihost_utils.broadcast_one_to_all(buf)
    damage, reason = json.loads(bytes(np.asarray(agreed)).rstrip(b'\0'))
    if reason is not None and error is None:
      error = OSError(reason)
  if error is not None:
    raise RestoreError(
        f'checkpoint {step_dir} cannot be read ({first_line(error)}); '
        'nothing was changed: fix the cause (a disk or network error, a '
        'workdir not every host sees) and rerun the same command')
  return damage


def restore_latest(manager: ocp.CheckpointManager, target: Any
                   ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
  """Restores the newest intact checkpoint onto `target`, or None if the
  directory holds none and never did.

  Steps proven damaged (see `find_damage`) are moved aside with a warning.
  Raises RestoreError, changing nothing, if an intact step cannot be read,
  or if every checkpoint is damaged (moved aside now or before): starting
  again from step 0 is the user's choice, not the loop's.
  """
  directory = os.fspath(manager.directory)
  for step in sorted(manager.all_steps(), reverse=True):
    step_dir = os.path.join(directory, str(step))
    damage = _agreed_damage(step_dir)
    if damage is None:
      check_fits(manager, step, target)
      try:
        state, data, metadata = restore(manager, step, target)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many types; unproven is not damage.
        verified = os.path.exists(os.path.join(step_dir, CHECKSUMS_FILE))
        raise RestoreError(
            f'checkpoint step {step} in {directory} cannot be read '
            f'({first_line(e)}); ' +
            ('its files match their checksums, so it is not damaged; '
             if verified else '') +
            'nothing was changed: fix the cause (memory, a disk or network '
            'error, a workdir not every host sees) and rerun the same '
            'command') from None
      recorded = (metadata or {}).get('step', step)
      state_step = (state.get('step') if isinstance(state, dict) else
                    getattr(state, 'step', None))
      state_step = step if state_step is None else int(state_step)
      if recorded == step and state_step == step:
        return state, data, metadata
      damage = f'it records step {recorded}, its state step {state_step}'
    logging.warning('checkpoint step %d in %s is damaged (%s); moved aside, '
                    'trying the previous one', step, directory, damage)
    _move_aside(manager, step)
  corrupt = sorted(d for d in os.listdir(directory)
                   if d.startswith('corrupt-')) if os.path.isdir(
                       directory) else []
  if corrupt:
    raise RestoreError(
        f'every checkpoint in {directory} is damaged ({", ".join(corrupt)}); '
        'nothing more was changed. To start this run again from step 0, '
        f'remove them (rm -r {directory}/corrupt-*), or pass a new --workdir')
  return None


def run_checkpoints(source: str, what: str = 'init_from'
                    ) -> tuple[str, str, int]:
  """(workdir, checkpoint directory, step) of `source`: a run's workdir or
  its checkpoints/ directory (the newest step), one numbered step directory
  in it, or checkpoints/best (the best step of a run with keep_best).
  Raises ConfigError, naming `source` as `what`, if it holds no
  checkpoint."""
  if '://' in str(source):
    raise ConfigError(f'{what} {source}: URLs are not supported yet; pass '
                      'a directory, e.g. the bucket mounted with gcsfuse')
  source = os.path.abspath(os.path.expanduser(str(source)))
  parent, name = os.path.split(source)
  if name == 'best' and not os.path.isdir(source):
    return _best(parent, what)
  if name.isdigit() and (os.path.isdir(os.path.join(source, 'state')) or
                         os.path.basename(parent) == 'checkpoints'):
    if not os.path.isdir(os.path.join(source, 'state')):
      others = [str(s) for s in _steps(parent) if s != int(name)]
      raise ConfigError(
          f'{what} {source} is not a finished checkpoint; ' +
          (f'{parent} has steps {", ".join(others)}' if others else
           f'{parent} holds no other'))
    directory, step = parent, int(name)
  else:
    directory = os.path.join(source, 'checkpoints')
    if (os.path.basename(source) == 'checkpoints' or
        not os.path.isdir(directory)):
      directory = source
    step = latest_step(directory)
  if step is None:
    raise ConfigError(f'{what} {source} holds no checkpoint; pass the '
                      'workdir of a run that saved one (its checkpoints/ has '
                      'numbered step directories)')
  workdir = (os.path.dirname(directory)
             if os.path.basename(directory) == 'checkpoints' else directory)
  return workdir, directory, step


def _best(directory: str, what: str) -> tuple[str, str, int]:
  workdir = os.path.dirname(directory)
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      keep_best = json.load(f).get('keep_best')
  except (OSError, ValueError):
    keep_best = None
  if not (keep_best or {}).get('metric'):
    raise ConfigError(f'{what}: {workdir} kept no best checkpoint (its '
                      'config has no keep_best); pass a step, or train with '
                      "--config.keep_best.metric=accuracy")
  step = best_step(directory, keep_best)
  if step is None:
    raise ConfigError(f'{what}: {directory} holds no checkpoint with eval '
                      'metrics yet; pass a step')
  return workdir, directory, step


def best_step(directory: str, keep_best: dict) -> int | None:
  """The best-scoring step in `directory` by `keep_best` = {metric, mode}
  (the metrics saved with each step), or None if no step has them."""
  if not os.path.isdir(directory):
    return None
  with ocp.CheckpointManager(os.path.abspath(directory),
                             options=ocp.CheckpointManagerOptions(
                                 read_only=True, **_best_options(keep_best))
                             ) as manager:
    return manager.best_step()


def latest_step(directory: str) -> int | None:
  """The newest finished checkpoint step in `directory`, without opening a
  manager (which would create the directory)."""
  return max(_steps(directory), default=None)


def _steps(directory: str) -> list[int]:
  # Finished saves are renamed to their step number; temporary ones are not.
  # Where saves are committed by a file instead (FUSE), the file decides.
  if not os.path.isdir(directory):
    return []
  fuse = _on_fuse(directory)
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit() and (
      not fuse or os.path.exists(os.path.join(directory, d, _COMMIT_FILE))))


def load_params(source: str, params: Any, skip: str | None = None, *,
                what: str = 'init_from') -> tuple[Any, dict[str, list[str]]]:
  """`params` read from the checkpoint in `source`, but for the names that
  match `skip`: fine-tuning from a pretrained run (big_vision's model_init
  with dont_load, MaxText's load_parameters_path).

  `source` is as in `run_checkpoints`; errors call it `what`. `params` may
  be boxed (as `init` returns them) and come back unboxed. Every leaf of
  `params` must be in the checkpoint, at the same name (e.g.
  'encoder/block_0/mlp/hidden/kernel') and shape, unless `skip` (a regex,
  `re.search`ed in each name; e.g. '^head/' for a new classifier head)
  matches its name: those keep their values. Leaves are read onto `params`' shardings and dtypes; the
  checkpoint's other leaves (a pretraining head, the optimizer state) are
  not read. Nothing in `source` is written.

  Returns:
    (params, report): report['loaded'], report['skipped'] and
    report['unused'] (checkpoint parameters not read), as names.

  Raises:
    ConfigError: `source` holds no checkpoint, or lacks a parameter that
      `skip` does not match, or holds it in another shape.
  """
  try:
    skip_re = re.compile(skip) if skip else None
  except re.error as e:
    raise ConfigError(f'init_skip {skip!r} is not a regular expression '
                      f'({e}); e.g. ^head/') from None
  params = nn.unbox(params)
  _, directory, step = run_checkpoints(source, what)
  step_dir = os.path.join(directory, str(step))
  state_dir = epath.Path(step_dir) / 'state'
  # The handler, not a Checkpointer: it reads the item directory without
  # looking for (and warning about) step-level metadata there.
  handler = ocp.PyTreeCheckpointHandler()
  try:
    return _load_matching(handler, state_dir, params, skip_re, what)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Orbax and TensorStore raise many types for damaged files.
    others = [str(s) for s in _steps(directory) if s != step]
    raise ConfigError(
        f'{what}: checkpoint {step_dir} cannot be read ({first_line(e)}); '
        + (f'{directory} also has steps {", ".join(others)}' if others else
           'pass another run')) from None
  finally:
    handler.close()


def _load_matching(handler: ocp.PyTreeCheckpointHandler, state_dir: epath.Path,
                   params: Any, skip_re: re.Pattern | None, what: str
                   ) -> tuple[Any, dict[str, list[str]]]:
  stored = _shapes(handler.metadata(state_dir).tree)
  stored = {k[len('params/'):]: v for k, v in stored.items()
            if k.startswith('params/')}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [_path_str(path) for path, _ in leaves]
  report = {'loaded': [], 'skipped': [], 'unused': []}
  wanted, misfits = {}, []
  for name, (_, x) in zip(names, leaves):
    if skip_re is not None and skip_re.search(name):
      report['skipped'].append(name)
    elif stored.get(name) == tuple(x.shape):
      report['loaded'].append(name)
      wanted[tuple(name.split('/'))] = jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=getattr(x, 'sharding', None))
    else:
      misfits.append(f'{name} ' + (
          'absent' if name not in stored else
          f'{stored[name]} there, {tuple(x.shape)} here'))
  if misfits:
    raise ConfigError(
        f'{what}: checkpoint {state_dir.parent} does not hold '
        f'{len(misfits)} parameter(s) of this model as they are here: '
        f'{listing(misfits)}; keep them as initialised with init_skip (a regex of '
        "names, e.g. '^head/'), or match the model to that run's")
  report['unused'] = sorted(set(stored) - set(report['loaded']))
  if report['skipped'] and not wanted:
    raise ConfigError(f'{what}: init_skip {skip_re.pattern!r} matches '
                      'every parameter, so nothing would be loaded; narrow it')
  if not wanted:
    return params, report
  item = {'params': flax.traverse_util.unflatten_dict(wanted)}
  restored = handler.restore(state_dir, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))
  loaded = flax.traverse_util.flatten_dict(restored['params'])
  values = [loaded.get(tuple(name.split('/')), x)
            for name, (_, x) in zip(names, leaves)]
  return jax.tree_util.tree_unflatten(treedef, values), report
