"""Model registry: `config.model.name` -> a Flax Linen module.

`build_model(config.model, num_classes=...)` passes every other field of
`config.model` to the module's constructor, so a config names exactly the
module's hyperparameters.
"""

from collections.abc import Mapping
from typing import Any, TYPE_CHECKING

import flax.linen as nn

from bigml_jax.errors import ConfigError
from bigml_jax.models.cnn import CNN
from bigml_jax.models.conv_attention import ConvAttentionCNN
from bigml_jax.models.embeddings import BagOfEmbeddingsClassifier
from bigml_jax.models.gan import (DCGANDiscriminator, DCGANGenerator,
                                  MLPDiscriminator, MLPGenerator)
from bigml_jax.models.mlp import MLP
from bigml_jax.models.rnn import RNNClassifier, SequenceClassifier
from bigml_jax.models.transformer import BertClassifier, BertMLM, GPTLM
from bigml_jax.models.vit import ViT

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

MODELS: dict[str, type[nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'rnn_classifier': RNNClassifier,
    'rnn_sequence': SequenceClassifier,
    'bag_of_embeddings': BagOfEmbeddingsClassifier,
    'bert': BertClassifier,
    'bert_mlm': BertMLM,
    'gpt': GPTLM,
    'vit': ViT,
    'conv_attention_cnn': ConvAttentionCNN,
    'dcgan_generator': DCGANGenerator,
    'dcgan_discriminator': DCGANDiscriminator,
    'mlp_generator': MLPGenerator,
    'mlp_discriminator': MLPDiscriminator,
}


def build_model(model_config: 'Mapping[str, Any] | ml_collections.ConfigDict',
                **extra) -> nn.Module:
  """Instantiates `MODELS[model_config['name']]` with the config's other
  fields (a ConfigDict or any mapping).

  `extra` supplies fields the data decides (e.g. `num_classes`) unless the
  config sets them.
  """
  name = model_config.get('name')
  if name is None:
    raise ConfigError('a model config needs a name (one of '
                      f'{", ".join(sorted(MODELS))})')
  if name not in MODELS:
    raise ConfigError(f'model.name {name!r} is unknown; known models: '
                      f'{", ".join(sorted(MODELS))}')
  kwargs = {k: v for k, v in model_config.items() if k != 'name'}
  for key, value in extra.items():
    kwargs.setdefault(key, value)
  fields = MODELS[name].__dataclass_fields__
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ConfigError(f'model {name!r} has no hyperparameter(s) '
                      f'{", ".join(unknown)}; remove them from config.model')
  try:
    return MODELS[name](**kwargs)
  except ValueError as e:  # A hyperparameter the model rejects.
    raise ConfigError(f'model {name!r}: {e}') from None


__all__ = ['CNN', 'MLP', 'MODELS', 'build_model']
