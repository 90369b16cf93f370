"""The five reference workloads of issue 7: sizes, optimizers and batches.

Shared by both sides of the comparison and importing neither JAX nor torch,
so each side's process holds only its own framework (peak memory is then
that framework's). `jax_workloads` builds the bigml_jax version of each,
`torch_workloads` its PyTorch eager twin with the same parameter count.

  mlp          784 -> 128 ReLU -> 10, batch 128, SGD 0.01
  cnn          conv3x3(3->32) ReLU pool2, conv3x3(32->64) ReLU pool2,
               fc 4096->128 ReLU, fc 128->10; 32x32x3, batch 128, SGD 0.01
  rnn          tanh RNN, input 32, hidden 128, length 64, last state -> 10,
               batch 64, Adam 1e-3
  transformer  pre-LN encoder, 4 layers, d 256, 4 heads, MLP 1024, length
               128, vocab 8192, mean-pool -> 2, batch 32, AdamW 3e-4
  gan          DCGAN z 100 -> 7x7x128 -> transposed convs -> 28x28x1 and a
               2-conv discriminator, batch 64, one D and one G update per
               step, Adam 2e-4 (b1 0.5)
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Workload:
  """One workload. `inputs` is the shape of one example under `input_key`
  (float32 images or sequences under 'image', as the framework's pipeline
  serves them, or int32 tokens in [1, vocab) when `vocab` is set)."""
  name: str
  batch_size: int
  inputs: tuple[int, ...]
  num_classes: int
  optimizer: dict
  input_key: str = 'image'
  vocab: int | None = None

  def batch(self, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic batch {input_key: [B, *inputs], 'label': [B] int32}."""
    rng = np.random.default_rng(seed)
    shape = (self.batch_size, *self.inputs)
    if self.vocab:
      # No 0s: id 0 is padding to the framework's text models.
      x = rng.integers(1, self.vocab, shape, dtype=np.int32)
    else:
      x = rng.standard_normal(shape, dtype=np.float32)
    labels = rng.integers(0, self.num_classes, self.batch_size, dtype=np.int32)
    return {self.input_key: x, 'label': labels}


def _opt(name, lr, **extra):
  return dict(name=name, learning_rate=lr, **extra)


WORKLOADS = {w.name: w for w in (
    Workload('mlp', 128, (784,), 10, _opt('sgd', 0.01)),
    Workload('cnn', 128, (32, 32, 3), 10, _opt('sgd', 0.01)),
    Workload('rnn', 64, (64, 32), 10, _opt('adam', 1e-3)),
    # torch.optim.AdamW's default decay, on matrices only (the framework's
    # decay_mask), on both sides.
    Workload('transformer', 32, (128,), 2,
             _opt('adamw', 3e-4, weight_decay=0.01), input_key='tokens',
             vocab=8192),
    Workload('gan', 64, (28, 28, 1), 1, _opt('adam', 2e-4, b1=0.5)),
)}

TRANSFORMER = dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024,
                   max_len=128)
RNN = dict(hidden=128)
GAN = dict(latent_dim=100, g_channels=(128, 64), d_channels=(64, 128),
           kernel_size=(4, 4))
