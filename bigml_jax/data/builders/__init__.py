"""TFDS builders for datasets that work offline, keyed by dataset name."""

from bigml_jax.data.builders.digits import Digits
from bigml_jax.data.builders.fortunes import Fortunes
from bigml_jax.data.builders.kjv_bible import KjvBible
from bigml_jax.data.builders.ring import GaussianRing

BUILDERS = {'digits': Digits, 'fortunes': Fortunes, 'kjv_bible': KjvBible,
            'gaussian_ring': GaussianRing}
