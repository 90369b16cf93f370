"""Errors a user can cause, importable without any config or data package."""


class ConfigError(ValueError):
  """A mistake the user can fix in the config or the command line."""


def listing(items, shown: int = 3, sep: str = ', ') -> str:
  """The first `shown` items joined by `sep`, then how many more: the list
  part of an error message."""
  items = [str(i) for i in items]
  return sep.join(items[:shown]) + (
      f' and {len(items) - shown} more' if len(items) > shown else '')


def check_choice(what: str, value, choices) -> None:
  """Raises ConfigError naming `what` unless `value` is one of `choices`."""
  if value not in choices:
    raise ConfigError(f'{what} {value!r} is unknown; use one of '
                      f'{", ".join(str(c) for c in choices)}')
