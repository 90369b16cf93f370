"""Search spaces: `FIELD=DISTRIBUTION` text, checked against a config.

A space maps dotted config fields to distributions written as calls, the
same in a config's `get_sweep()` and on the command line (`--space=...`):

  loguniform(1e-4, 1e-1)   float, uniform in log space (0 < low < high)
  uniform(0.0, 0.5)        float (low < high)
  int(1, 8)                integer in [low, high]
  logint(16, 512)          integer, uniform in log space
  choice(relu, gelu)       one of the values (bare words are strings;
                           numbers, tuples and quoted strings as in Python)

Every mistake (an unknown field, an empty or inverted range, a value the
field's type or the config's checks reject) is a ConfigError naming it.
"""

import ast
import copy
import dataclasses
import difflib
import math
import numbers
from typing import Any

import ml_collections

from bigml_jax.config import validate_config
from bigml_jax.errors import ConfigError

KINDS = ('loguniform', 'uniform', 'int', 'logint', 'choice')
_EXAMPLES = ('loguniform(1e-4, 1e-1), uniform(0, 0.5), int(1, 8), '
             'logint(16, 512) or choice(relu, gelu)')
_PLAIN = (type(None), bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class Param:
  """One field's distribution: `kind` in KINDS; `args` are (low, high) for
  ranges and the values for a choice; `source` where it was written (for
  error messages); `text` is the canonical spelling."""
  field: str
  kind: str
  args: tuple[Any, ...]
  source: str = ''

  @property
  def text(self) -> str:
    return f'{self.kind}({", ".join(_spell(a) for a in self.args)})'

  def suggest(self, trial) -> Any:
    """The value an Optuna trial draws (or was given) for this field."""
    if self.kind == 'choice':
      drawn = trial.suggest_categorical(self.field,
                                        [stored(v) for v in self.args])
      return next(v for v in self.args if stored(v) == drawn)
    low, high = self.args
    if self.kind in ('int', 'logint'):
      return trial.suggest_int(self.field, low, high, log=self.kind == 'logint')
    return trial.suggest_float(self.field, float(low), float(high),
                               log=self.kind == 'loguniform')

  def contains(self, value: Any) -> bool:
    if self.kind == 'choice':
      return any(stored(v) == stored(value) for v in self.args)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return False
    if self.kind in ('int', 'logint') and value != int(value):
      return False
    return self.args[0] <= value <= self.args[1]


def _spell(value: Any) -> str:
  return repr(value) if not isinstance(value, str) else value


def stored(value: Any) -> Any:
  """`value` as Optuna stores a choice: as it is, or (a tuple) by repr."""
  return value if isinstance(value, _PLAIN) else repr(value)


def override_text(value: Any) -> str:
  """`value` as `--config.FIELD=TEXT` needs it (floats round-trip exactly)."""
  return value if isinstance(value, str) else repr(value)


def _arg(node: ast.expr) -> Any:
  if isinstance(node, ast.Name):  # choice(relu, gelu): bare words.
    return node.id
  return ast.literal_eval(node)


def parse_param(field: str, spec: str, source: str) -> Param:
  """`spec` (e.g. 'loguniform(1e-4, 1e-1)') for `field`; `source` names
  where it was written, for the error message."""
  where = f'{field}={spec} ({source})'
  try:
    node = ast.parse(str(spec).strip(), mode='eval').body
    if (not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name)
        or node.keywords):
      raise ValueError
    args = tuple(_arg(a) for a in node.args)
  except (SyntaxError, ValueError, TypeError):
    raise ConfigError(f'{where} is not a distribution; write one of '
                      f'{_EXAMPLES}') from None
  kind = node.func.id
  if kind not in KINDS:
    close = difflib.get_close_matches(kind, KINDS, n=1)
    hint = f'did you mean {close[0]}? ' if close else ''
    raise ConfigError(f'{where}: unknown distribution {kind}; {hint}use one '
                      f'of {_EXAMPLES}')
  if kind == 'choice':
    if not args:
      raise ConfigError(f'{where} is empty; list at least one value')
    kept = [stored(a) for a in args]
    twice = [v for i, v in enumerate(kept) if v in kept[:i]]
    if twice:
      raise ConfigError(f'{where} lists {twice[0]!r} twice; list each value '
                        'once')
    return Param(field, kind, args, source)
  return Param(field, kind, _check_range(where, kind, args), source)


def _check_range(where: str, kind: str, args: tuple[Any, ...]
                 ) -> tuple[Any, Any]:
  integer = kind in ('int', 'logint')
  number = numbers.Integral if integer else numbers.Real
  if len(args) != 2 or not all(isinstance(a, number) and
                               not isinstance(a, bool) for a in args):
    raise ConfigError(f'{where}: {kind} takes two '
                      f'{"integers" if integer else "numbers"}, low and high')
  low, high = args
  if not all(math.isfinite(a) for a in args):
    raise ConfigError(f'{where}: the bounds must be finite')
  if low == high:
    raise ConfigError(f'{where} is an empty range; give low < high (or fix '
                      'the field with --config.FIELD=VALUE instead)')
  if low > high:
    raise ConfigError(f'{where} is inverted: low {low!r} > high {high!r}; '
                      f'write {kind}({high!r}, {low!r})')
  if kind.startswith('log') and low <= 0:
    raise ConfigError(f'{where}: a log scale needs low > 0; use uniform for '
                      'ranges that reach 0')
  return (int(low), int(high)) if integer else (low, high)


def parse_space(specs: dict[str, str], source: str) -> dict[str, Param]:
  """{field: spec text} -> {field: Param}, in the order given."""
  if not isinstance(specs, dict):
    raise ConfigError(f'the search space ({source}) must be a dict of '
                      f'{{field: distribution}}, got {type(specs).__name__}')
  return {field: parse_param(field, spec, source)
          for field, spec in specs.items()}


def leaf_fields(config: ml_collections.ConfigDict, prefix: str = ''
                ) -> list[str]:
  """Every field of `config` that holds a value, as dotted names."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += leaf_fields(value, f'{prefix}{key}.')
    else:
      out.append(f'{prefix}{key}')
  return out


def _node(config, field):
  *path, last = field.split('.')
  node = config
  for key in path:
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      return None, last
    node = node[key]
  if not isinstance(node, ml_collections.ConfigDict) or last not in node:
    return None, last
  return node, last


def check_space(space: dict[str, Param],
                config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless every field of `space` is a field of `config`
  that takes each end of its range (or each choice) and still passes the
  config's checks (e.g. warmup_steps <= total_steps)."""
  fields = leaf_fields(config)
  for field, param in space.items():
    source = param.source or 'search space'
    node, last = _node(config, field)
    if node is None or isinstance(node[last], ml_collections.ConfigDict):
      close = difflib.get_close_matches(field, fields, n=1, cutoff=0.6)
      hint = (f'did you mean {close[0]}?' if close else
              'name a field of the config, e.g. ' + ', '.join(fields[:4]))
      kind = 'a section, not a field' if node is not None else 'not a field'
      raise ConfigError(f'search space field {field} ({source}) is {kind} '
                        f'of the config; {hint}')
    # Checked as the trials will draw them: a uniform's values are floats.
    values = (tuple(map(float, param.args))
              if param.kind in ('uniform', 'loguniform') else param.args)
    for value in values:
      trial = copy.deepcopy(config)
      target, _ = _node(trial, field)
      try:
        with trial.unlocked():
          target[last] = value
      except (TypeError, ValueError) as e:
        raise ConfigError(f'{field}={param.text} ({source}): {value!r} does '
                          f'not fit the field ({e})') from None
      try:
        validate_config(trial)
      except ConfigError as e:
        raise ConfigError(f'{field}={param.text} ({source}): with {field}='
                          f'{_spell(value)} the config is invalid: {e}'
                          ) from None
