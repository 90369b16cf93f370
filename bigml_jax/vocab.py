"""The token ids every tokenizer of bigml_jax reserves, defined once for the
tokenizers (data.text), the models that mask padding and the tasks.

A pretrained tokenizer may have others (GPT-2: no pad, EOS 50256): a model
built for it carries them as its `pad_id` and `eos_id`.
"""

PAD_ID = 0
EOS_ID = 1
