"""Deployment: export a trained run, load it without the model code, serve it.

  export_model, export_run   write an artifact (bigml_jax.serving.export;
                             needs flax and the model code)
  load                       an artifact -> a callable on raw inputs
                             (bigml_jax.serving.artifact; jax and numpy)
  make_app                   the HTTP app with dynamic batching
                             (bigml_jax.serving.server; starlette)

Names are imported on first use, so `bigml_jax.serving.load` imports
neither flax nor bigml_jax.models.
"""

import importlib

_EXPORTS = {
    'ArtifactError': 'bigml_jax.serving.artifact',
    'InputError': 'bigml_jax.serving.inputs',
    'export_model': 'bigml_jax.serving.export',
    'export_run': 'bigml_jax.serving.export',
    'load': 'bigml_jax.serving.artifact',
    'make_app': 'bigml_jax.serving.server',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
