"""Recurrent cells, a masked scan over time, and sequence classifiers (of
token ids and of float sequences).

A cell maps (carry, x_t [B, D]) -> (carry, y_t [B, features]) and has
`initialize_carry(rng, input_shape)`, as flax's cells do. `Recurrent` scans a
cell over [B, L, D] with `nn.scan`, so the loop is one compiled `lax.scan`
whatever L is.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigml_jax.vocab import PAD_ID
from bigml_jax.errors import ConfigError, check_choice
from bigml_jax.models import layers
from bigml_jax.models.embeddings import Embed

# Input kernels [in, hidden], recurrent kernels [hidden, hidden] and biases
# [hidden] of flax's LSTM/GRU cells; `RNNCell` stores W and U the other way
# round (see there).
_input_init = nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                           ('embed', 'mlp'))
_recurrent_init = nn.with_logical_partitioning(nn.initializers.orthogonal(),
                                               (None, 'mlp'))
_bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                          ('mlp',))


class RNNCell(nn.RNNCellBase):
  """Elman cell: h_t = tanh(W h_{t-1} + U x_t + b).

  W [features, features], U [features, D] and b [features] are stored under
  those names and in that (math, column-vector) orientation, so the formula
  reads off the parameters; with row-vector batches the cell computes
  h W^T + x U^T + b. The carry is h [B, features] and the output is h too.

  Attributes:
    features: width of the hidden state h.
  """
  features: int

  @nn.compact
  def __call__(self, h_BxH: jnp.ndarray,
               x_BxD: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    w_HxH = self.param(
        'W', nn.with_logical_partitioning(nn.initializers.orthogonal(),
                                          ('mlp', None)),
        (self.features, self.features))
    u_HxD = self.param(
        'U', nn.with_logical_partitioning(
            nn.initializers.lecun_normal(in_axis=-1, out_axis=-2),
            ('mlp', 'embed')),
        (self.features, x_BxD.shape[-1]))
    b_H = self.param('b', _bias_init, (self.features,))
    h_BxH = jnp.tanh(h_BxH @ w_HxH.T + x_BxD @ u_HxD.T + b_H)
    return h_BxH, h_BxH

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array,
                       input_shape: tuple[int, ...]) -> jnp.ndarray:
    del rng  # The initial state is zeros.
    return jnp.zeros(input_shape[:-1] + (self.features,))

  @property
  def num_feature_axes(self) -> int:
    return 1


def make_cell(kind: str, features: int, name: str | None = None):
  """'rnn' | 'lstm' | 'gru' -> a cell whose parameters carry logical names."""
  if kind == 'rnn':
    return RNNCell(features, name=name)
  inits = dict(kernel_init=_input_init, recurrent_kernel_init=_recurrent_init,
               bias_init=_bias_init, name=name)
  if kind == 'lstm':
    return nn.OptimizedLSTMCell(features, **inits)
  if kind == 'gru':
    return nn.GRUCell(features, **inits)
  raise ConfigError(f"cell {kind!r} is unknown; use 'rnn', 'lstm' or 'gru'")


def _masked_step(cell, state, inputs):
  """One time step; rows whose mask is False keep their state, output zero."""
  carry, last_y_BxH = state
  x_BxD, valid_B = inputs
  new_carry, y_BxH = cell(carry, x_BxD)
  keep = lambda new, old: jnp.where(
      valid_B.reshape(valid_B.shape + (1,) * (new.ndim - 1)), new, old)
  carry = jax.tree.map(keep, new_carry, carry)
  last_y_BxH = keep(y_BxH, last_y_BxH)
  return (carry, last_y_BxH), keep(y_BxH, jnp.zeros_like(y_BxH))


class Recurrent(nn.Module):
  """Scans `cell` over time: [B, L, D] (+ mask [B, L]) -> [B, L, H], [B, H].

  At a step whose mask is False the carry is not updated and the output is
  zero, so for a right-padded batch every sequence stops at its own length:
  the second result, the output at each row's last valid step, is what the
  same sequence alone (unpadded) would end with. Rows with no valid step
  return zeros.

  Attributes:
    cell: a cell from `make_cell` (or any flax RNN cell with a `features`).
  """
  cell: nn.RNNCellBase

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, mask_BxL: jnp.ndarray | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
    b, length = x_BxLxD.shape[:2]
    if mask_BxL is None:
      mask_BxL = jnp.ones((b, length), bool)
    carry = self.cell.initialize_carry(jax.random.key(0), x_BxLxD[:, 0].shape)
    last_y_BxH = jnp.zeros((b, self.cell.features), x_BxLxD.dtype)
    scan = nn.scan(_masked_step, variable_broadcast='params',
                   split_rngs={'params': False}, in_axes=1, out_axes=1)
    (_, last_y_BxH), y_BxLxH = scan(self.cell, (carry, last_y_BxH),
                                    (x_BxLxD, mask_BxL.astype(bool)))
    return y_BxLxH, last_y_BxH


READOUTS = ('last', 'mean', 'all')


def _read_out(model: nn.Module, x_BxLxD: jnp.ndarray,
              mask_BxL: jnp.ndarray | None) -> jnp.ndarray:
  """`model`'s recurrent layer(s) over x, read out: [B, F].

  Call inside `model`'s compact method; it has `cell`, `hidden_dim`,
  `bidirectional` and `readout`. A backward layer reads each sequence's
  real steps from its last to its first (padding reversed to the front is
  skipped by the mask). Readouts: 'last', the output at each sequence's
  last real step (and, bidirectional, the backward layer's at its first),
  F = H or 2H; 'mean', the mean output over real steps, F = H or 2H;
  'all', every step's output (zeros at padding), F = L * H or L * 2H.
  """
  check_choice('readout', model.readout, READOUTS)
  cell = make_cell(model.cell, model.hidden_dim, name='cell')
  y_BxLxH, last_BxH = Recurrent(cell, name='recurrent')(x_BxLxD, mask_BxL)
  if model.bidirectional:
    back = make_cell(model.cell, model.hidden_dim, name='cell_backward')
    reverse = lambda a: None if a is None else a[:, ::-1]
    back_BxLxH, first_BxH = Recurrent(back, name='recurrent_backward')(
        reverse(x_BxLxD), reverse(mask_BxL))
    y_BxLxH = jnp.concatenate([y_BxLxH, reverse(back_BxLxH)], axis=-1)
    last_BxH = jnp.concatenate([last_BxH, first_BxH], axis=-1)
  if model.readout == 'last':
    return last_BxH
  if model.readout == 'all':
    return y_BxLxH.reshape(y_BxLxH.shape[0], -1)
  if mask_BxL is None:
    return y_BxLxH.mean(axis=1)
  # Padded steps output zeros: the sum is over real steps only.
  count_Bx1 = jnp.maximum(mask_BxL.sum(axis=1, keepdims=True), 1)
  return y_BxLxH.sum(axis=1) / count_Bx1.astype(y_BxLxH.dtype)


class RNNClassifier(nn.Module):
  """Token ids [B, L] (PAD_ID = padding) -> logits [B, num_classes].

  Embedding -> a recurrent layer over the non-pad tokens (and, with
  `bidirectional`, one reading them backwards) -> the readout (by default
  the hidden output at each sequence's last real token) -> dropout ->
  dense. Pads may sit anywhere: the recurrence skips them.

  Attributes:
    vocab_size: number of token ids.
    num_classes: size of the output layer.
    cell: 'rnn' (Elman, `RNNCell`), 'lstm' or 'gru'.
    embed_dim: token embedding width.
    hidden_dim: recurrent state width (per direction).
    dropout_rate: dropout on the embeddings and the readout (training).
    bidirectional: add a layer that reads the sequence backwards.
    readout: 'last' | 'mean' | 'all' (see `_read_out`).
  """
  vocab_size: int
  num_classes: int
  cell: str = 'lstm'
  embed_dim: int = 64
  hidden_dim: int = 128
  dropout_rate: float = 0.0
  bidirectional: bool = False
  readout: str = 'last'

  @nn.compact
  def __call__(self, tokens_BxL: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    x_BxLxD = Embed(self.vocab_size, self.embed_dim, name='embed')(tokens_BxL)
    x_BxLxD = nn.Dropout(self.dropout_rate, deterministic=not train)(x_BxLxD)
    h_BxF = _read_out(self, x_BxLxD, tokens_BxL != PAD_ID)
    h_BxF = nn.Dropout(self.dropout_rate, deterministic=not train)(h_BxF)
    return layers.dense(self.num_classes, ('mlp', 'vocab'), name='head')(h_BxF)


class SequenceClassifier(nn.Module):
  """Float sequences [B, L, D] (e.g. time series, every step real; [B, L]
  is read as D = 1) -> logits [B, num_classes]: a recurrent layer (and,
  with `bidirectional`, a backward one), the readout (by default the last
  state), dropout, dense.

  Attributes:
    num_classes: size of the output layer.
    cell: 'rnn' (Elman, `RNNCell`), 'lstm' or 'gru'.
    hidden_dim: recurrent state width (per direction).
    dropout_rate: dropout on the readout (training).
    bidirectional: add a layer that reads the sequence backwards.
    readout: 'last' | 'mean' | 'all' (see `_read_out`).
  """
  num_classes: int
  cell: str = 'rnn'
  hidden_dim: int = 128
  dropout_rate: float = 0.0
  bidirectional: bool = False
  readout: str = 'last'

  @nn.compact
  def __call__(self, x_BxLxD: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    if x_BxLxD.ndim == 2:
      x_BxLxD = x_BxLxD[..., None]
    h_BxF = _read_out(self, x_BxLxD, None)
    h_BxF = nn.Dropout(self.dropout_rate, deterministic=not train)(h_BxF)
    return layers.dense(self.num_classes, ('mlp', 'vocab'), name='head')(h_BxF)
