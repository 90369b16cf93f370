"""`gaussian_ring`: 2-D points from 8 Gaussians on a circle, for GANs.

The mixture of the mode-collapse literature (Metz et al., 2017, "Unrolled
GANs"; Srivastava et al., 2017, VEEGAN): 8 equally weighted Gaussians with
standard deviation 0.02, centred at angles 2*pi*k/8 on a circle of radius 2.
A generator that covers it must put mass on all 8 small, far-apart modes.

Points are drawn once with a fixed seed (train 50,000 / test 5,000, test
from its own seed), so the dataset is the same on every machine. 'image' is
the point, a float32 [2] vector; 'label' is the index k of its mode.
"""

import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.data.builders._common import dataset_info

NUM_MODES = 8
RADIUS = 2.0
SIGMA = 0.02
_SIZES = {'train': 50_000, 'test': 5_000}
_SEEDS = {'train': 0, 'test': 1}


def mode_centers(num_modes: int = NUM_MODES,
                 radius: float = RADIUS) -> np.ndarray:
  """[num_modes, 2] centres on the circle, mode k at angle 2*pi*k/num_modes."""
  angles = 2 * np.pi * np.arange(num_modes) / num_modes
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


class GaussianRing(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for the 8-Gaussian ring, written as array_record."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '8 Gaussians (sigma 0.02) on a circle of radius '
                   '2; 50,000 train / 5,000 test points.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(self, {
        'image': tfds.features.Tensor(shape=(2,), dtype=np.float32),
        'label': tfds.features.ClassLabel(num_classes=NUM_MODES),
    }, __doc__,
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the points are sampled here.
    return {split: self._generate_examples(split) for split in _SIZES}

  def _generate_examples(self, split: str):
    rng = np.random.default_rng(_SEEDS[split])
    labels = rng.integers(NUM_MODES, size=_SIZES[split])
    points = (mode_centers()[labels]
              + SIGMA * rng.standard_normal((_SIZES[split], 2)))
    for i, (point, label) in enumerate(zip(points.astype(np.float32), labels)):
      yield i, {'image': point, 'label': int(label)}
