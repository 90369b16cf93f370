"""Errors a user can cause, importable without any config or data package."""


class ConfigError(ValueError):
  """A mistake the user can fix in the config or the command line."""
