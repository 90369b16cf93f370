"""`digits`: 1,797 real 8x8 handwritten digits that scikit-learn ships.

The UCI "Optical Recognition of Handwritten Digits" test set (43 writers),
bundled inside the scikit-learn wheel, so it works with no network. Pixels are
counts 0..16 of an 8x8 grid; they are stored rescaled to uint8 0..255.

Split: every 5th image (index % 5 == 0) is `test` (360), the rest `train`
(1,437). Images are `Tensor` features, not `Image`: encoding PNGs would need
TensorFlow, which the framework does not use at run time.
"""

import numpy as np
import tensorflow_datasets as tfds

from bigml_jax.data.builders._common import dataset_info


class Digits(tfds.core.GeneratorBasedBuilder):
  """TFDS builder for scikit-learn's digits, written as array_record."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'scikit-learn digits as 8x8x1 uint8 tensors, in '
                   'their original order.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(self, {
        'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
        'label': tfds.features.ClassLabel(num_classes=10),
    }, __doc__,
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80')

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data is in scikit-learn.
    return {'train': self._generate_examples(is_test=False),
            'test': self._generate_examples(is_test=True)}

  def _generate_examples(self, is_test: bool):
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, digits.target)):
      if (i % 5 == 0) == is_test:
        yield i, {'image': image[..., None], 'label': int(label)}
