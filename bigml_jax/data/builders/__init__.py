"""TFDS builders for datasets that work offline, keyed by dataset name."""

from bigml_jax.data.builders.digits import Digits

BUILDERS = {'digits': Digits}
