"""GPT-style causal decoder LM on the King James Bible (`kjv_bible`).

Character-level, windows of 128 characters, tied embeddings; reports
held-out perplexity per character:

  python -m experiments.run --config=experiments/configs/gpt_kjv.py \
      --workdir=/tmp/bigml/gpt_kjv

Result: held-out loss 1.418 per character, perplexity 4.13, next-character
accuracy 0.583 after 1,000 steps, 334 s wall (~100 sequences/s) on a
2-core AMD EPYC CPU, one CPU device, measured 2026-11-28; the same figures
again on 2026-11-29, in 301 s with the samples below (load 1.5-2.5). First
train step at 7.3-7.4 s from command start (cold and warm compilation
cache; a 20-step run, load 1.9-2.3, 2026-11-29).

Each eval writes samples_STEP.txt (config.sampling). At step 1,000 one
read "And Ustid the deplat overy me: for I paaste cased to able a lifuet
also him the LORD trudims, thir shull be live als": the verse's shape and
its common words, at this size and step count. A prompt of yours:

  python -m experiments.sample --workdir=/tmp/bigml/gpt_kjv \
      --prompt='And God said' --temperature=0.8
"""

import ml_collections

from experiments.configs import _common


def get_config() -> ml_collections.ConfigDict:
  config = _common.base(batch_size=32, total_steps=1000, log_every=100,
                        eval_every=500)
  config.task = 'lm'
  config.model = ml_collections.ConfigDict({
      'name': 'gpt', 'num_layers': 4, 'd_model': 128, 'num_heads': 4,
      'mlp_dim': 512, 'max_len': 128, 'dropout_rate': 0.0,
      'remat': 'none'})
  config.dataset = _common.dataset('kjv_bible', tokenizer='char',
                                   max_length=128)
  config.optimizer = _common.optimizer('adamw', 1e-3, warmup_steps=100,
                                       weight_decay=0.01, grad_clip_norm=1.0)
  # Each eval writes samples_STEP.txt: verses drawn from the model.
  config.sampling = ml_collections.ConfigDict(
      {'num_samples': 4, 'temperature': 1.0, 'top_k': 0, 'top_p': 1.0})
  return config
