"""Bag-of-embeddings classifier on `fortunes`: the product's seed formula.

A fortune's vector is the normalised weighted sum of its subword vectors
(BPE 2k trained on the train split), each weighted by a learned positive
scalar per vocabulary entry (`models.embeddings.ComposedEmbed`); a linear
read-out gives the class:

  python -m experiments.run --config=experiments/configs/bag_fortunes.py \\
      --workdir=/tmp/bigml/bag_fortunes

Result: test accuracy 0.9739 (loss 0.0786) after 1,500 steps, 18.9 s wall
from command start with a cold compilation cache (first train step at
13.1 s), on a 2-core AMD EPYC CPU, one CPU device, load 0.7-1.9, measured
2026-12-03 13:13 UTC: above the RNNs and the BERT encoder on these three
fortune files, whose classes are told apart by their words.
"""

import ml_collections

from experiments.configs import _common


def get_config() -> ml_collections.ConfigDict:
  config = _common.base(batch_size=32, total_steps=1500, log_every=100)
  config.model = ml_collections.ConfigDict({
      'name': 'bag_of_embeddings', 'features': 128, 'weighting': 'learned',
      'hidden': (), 'dropout_rate': 0.1})
  config.dataset = _common.dataset('fortunes', tokenizer='subword',
                                   vocab_size=2048, max_length=128)
  config.optimizer = _common.optimizer('adam', 5e-3, warmup_steps=100,
                                       grad_clip_norm=1.0)
  return config
