"""Tasks: what is optimised (loss and metrics) for a family of models."""

from bigml_jax.tasks.classification import ClassificationTask

__all__ = ['ClassificationTask']
