"""What every builder here declares the same way."""

import tensorflow_datasets as tfds


def dataset_info(builder: tfds.core.GeneratorBasedBuilder, features: dict,
                 description: str, **kwargs) -> tfds.core.DatasetInfo:
  """`builder`'s DatasetInfo: `features` (a dict of TFDS features), its
  module's `description`, and examples kept in the order they are written,
  so example i of a split is documented (training shuffles with grain).

  DatasetInfo directly: `dataset_info_from_configs` looks for metadata files
  beside the module, which a pip-installed package does not ship.
  """
  return tfds.core.DatasetInfo(
      builder=builder, description=description,
      features=tfds.features.FeaturesDict(features), disable_shuffling=True,
      **kwargs)
