"""PyTorch eager twins of the workloads: same layers, same trainable
parameter count, same optimizer, written the way the PyTorch tutorials do.

Only the rnn needs care to keep the count equal: `torch.nn.RNN` carries two
biases (b_ih + b_hh) where the framework's cell has one, so b_hh is frozen at
zero: the function and the trainable count are then the framework's.
"""

import dataclasses
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from benchmarks.workloads import GAN, RNN, TRANSFORMER, WORKLOADS, Workload


def count_trainable(*modules: nn.Module) -> int:
  return sum(p.numel() for m in modules for p in m.parameters()
             if p.requires_grad)


def _gelu(x):
  return F.gelu(x, approximate='tanh')  # flax.linen.gelu's default.


class Encoder(nn.Module):
  """Token + learned position embeddings -> pre-LN encoder -> final LN ->
  mean over real tokens -> linear, as `bigml_jax.models.BertClassifier`."""

  def __init__(self, vocab, num_classes, num_layers, d_model, num_heads,
               mlp_dim, max_len):
    super().__init__()
    self.embed = nn.Embedding(vocab, d_model)
    self.positions = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
    layer = nn.TransformerEncoderLayer(
        d_model, num_heads, mlp_dim, dropout=0.0, activation=_gelu,
        batch_first=True, norm_first=True)
    self.encoder = nn.TransformerEncoder(layer, num_layers,
                                         norm=nn.LayerNorm(d_model),
                                         enable_nested_tensor=False)
    self.head = nn.Linear(d_model, num_classes)

  def forward(self, tokens):
    valid = tokens != 0
    x = self.embed(tokens) + self.positions[:tokens.shape[1]]
    x = self.encoder(x, src_key_padding_mask=~valid)
    w = valid.to(x.dtype)
    pooled = torch.einsum('bld,bl->bd', x, w) / w.sum(1, keepdim=True).clamp(min=1)
    return self.head(pooled)


class SequenceRNN(nn.Module):
  def __init__(self, input_dim, hidden, num_classes):
    super().__init__()
    self.rnn = nn.RNN(input_dim, hidden, nonlinearity='tanh', batch_first=True)
    with torch.no_grad():
      self.rnn.bias_hh_l0.zero_()
    self.rnn.bias_hh_l0.requires_grad_(False)
    self.head = nn.Linear(hidden, num_classes)

  def forward(self, x):
    _, h = self.rnn(x)
    return self.head(h[0])


def make_model(w: Workload) -> nn.Module:
  if w.name == 'mlp':
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
  if w.name == 'cnn':
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10))
  if w.name == 'rnn':
    return SequenceRNN(w.inputs[-1], RNN['hidden'], w.num_classes)
  if w.name == 'transformer':
    return Encoder(w.vocab, w.num_classes, **TRANSFORMER)
  raise ValueError(w.name)


def make_gan(w: Workload) -> tuple[nn.Module, nn.Module]:
  z, (c0, c1), (d0, d1) = GAN['latent_dim'], GAN['g_channels'], GAN['d_channels']
  k = GAN['kernel_size'][0]
  h, _, c = w.inputs
  s = h // 4
  generator = nn.Sequential(
      nn.Linear(z, s * s * c0), nn.ReLU(), nn.Unflatten(1, (c0, s, s)),
      nn.ConvTranspose2d(c0, c1, k, 2, 1), nn.ReLU(),
      nn.ConvTranspose2d(c1, c, k, 2, 1), nn.Sigmoid())
  discriminator = nn.Sequential(
      nn.Conv2d(c, d0, k, 2, 1), nn.LeakyReLU(0.2),
      nn.Conv2d(d0, d1, k, 2, 1), nn.LeakyReLU(0.2),
      nn.Flatten(), nn.Linear(s * s * d1, 1))
  return generator, discriminator


def _optimizer(params, opt: dict):
  if opt['name'] == 'sgd':
    return torch.optim.SGD(params, lr=opt['learning_rate'])
  if opt['name'] == 'adam':
    return torch.optim.Adam(params, lr=opt['learning_rate'],
                            betas=(opt.get('b1', 0.9), 0.999))
  if opt['name'] == 'adamw':
    params = [p for p in params if p.requires_grad]
    # Decay on matrices only, as the framework's decay_mask.
    return torch.optim.AdamW(
        [{'params': [p for p in params if p.ndim > 1]},
         {'params': [p for p in params if p.ndim <= 1], 'weight_decay': 0.0}],
        lr=opt['learning_rate'], weight_decay=opt.get('weight_decay', 0.0))
  raise ValueError(opt['name'])


@dataclasses.dataclass
class TorchBench:
  step: Callable[[], torch.Tensor]  # one train step; returns the loss
  num_params: int


def _to_torch(w: Workload, seed: int):
  batch = w.batch(seed)
  x = torch.from_numpy(batch[w.input_key])
  if w.input_key == 'image' and x.ndim == 4:
    x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> torch's NCHW.
  if w.vocab:
    x = x.long()
  return x, torch.from_numpy(batch['label']).long()


def build_workload(name: str, *, seed: int = 0) -> TorchBench:
  w = WORKLOADS[name]
  torch.manual_seed(seed)
  x, y = _to_torch(w, seed)
  if name == 'gan':
    return _gan_bench(w, x)
  model = make_model(w)
  opt = _optimizer(list(model.parameters()), w.optimizer)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

  return TorchBench(step, count_trainable(model))


def _gan_bench(w: Workload, real: torch.Tensor) -> TorchBench:
  """The framework's GAN step: D on real vs G(z1).detach(); then G on
  fresh G(z2) through a frozen D (no D weight gradients, as in JAX)."""
  generator, discriminator = make_gan(w)
  g_opt = _optimizer(list(generator.parameters()), w.optimizer)
  d_opt = _optimizer(list(discriminator.parameters()), w.optimizer)
  b, z = real.shape[0], GAN['latent_dim']

  def step():
    fake = generator(torch.randn(b, z)).detach()
    d_opt.zero_grad(set_to_none=True)
    d_loss = (F.softplus(-discriminator(real)) +
              F.softplus(discriminator(fake))).mean()
    d_loss.backward()
    d_opt.step()
    discriminator.requires_grad_(False)
    g_opt.zero_grad(set_to_none=True)
    g_loss = F.softplus(-discriminator(generator(torch.randn(b, z)))).mean()
    g_loss.backward()
    g_opt.step()
    discriminator.requires_grad_(True)
    return d_loss + g_loss

  return TorchBench(step, count_trainable(generator, discriminator))
