"""Why did the model say that: attributions, attention maps, embeddings.

Pure functions of (apply_fn or model, params, inputs[, target]) that jit,
vmap and run sharded; `experiments/explain.py` turns them into pictures.

  attributions   saliency, gradient_x_input, smoothgrad,
                 integrated_gradients, occlusion (images)
  tokens         text models attributed at their embeddings, per token
  attention      each layer's attention weights, attention rollout
  embeddings     nearest neighbours by cosine, a 2-D PCA projection
"""

from bigml_jax.explain.attention import (ATTENTION_MODELS,
                                         attention_layer_names, attention_maps,
                                         attention_rollout, pooled_relevance)
from bigml_jax.explain.attributions import (METHODS, gradient_x_input,
                                            integrated_gradients, occlusion,
                                            saliency, smoothgrad,
                                            target_logits)
from bigml_jax.explain.embeddings import nearest_neighbours, pca_2d
from bigml_jax.explain.tokens import (embedding_apply_fn, per_token,
                                      token_embeddings)

__all__ = ['ATTENTION_MODELS', 'METHODS', 'attention_layer_names',
           'attention_maps',
           'attention_rollout', 'embedding_apply_fn', 'gradient_x_input',
           'integrated_gradients', 'nearest_neighbours', 'occlusion',
           'pca_2d', 'per_token', 'pooled_relevance', 'saliency',
           'smoothgrad', 'target_logits', 'token_embeddings']
