"""The optax transformation and learning-rate schedule described by a config.

config.optimizer fields: name (sgd | adam | adamw), learning_rate, schedule
(constant | cosine | linear, each after `warmup_steps` of linear warmup from
0), weight_decay, grad_clip_norm (0 = off), and optionally momentum (sgd),
b1, b2, eps (adam, adamw).
"""

from typing import TYPE_CHECKING

import jax
import optax

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

from bigml_jax.errors import ConfigError


def make_schedule(opt: 'ml_collections.ConfigDict',
                  total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step."""
  lr, warmup = opt.learning_rate, opt.warmup_steps
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == 'constant':
    after = optax.constant_schedule(lr)
  elif opt.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps)
  elif opt.schedule == 'linear':
    after = optax.linear_schedule(lr, 0.0, decay_steps)
  else:
    raise ConfigError(f'optimizer.schedule {opt.schedule!r} is unknown; use '
                      'constant, cosine or linear')
  if not warmup:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params):
  """Weight decay applies to kernels and embeddings only, not to biases or
  norm scales: those are exactly the parameters with fewer than 2 dims."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(opt: 'ml_collections.ConfigDict', total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (transformation, schedule) for `config.optimizer`.

  AdamW uses decoupled weight decay scaled by the learning rate (Loshchilov &
  Hutter); for sgd and adam, weight_decay adds an L2 gradient term.
  """
  schedule = make_schedule(opt, total_steps)
  wd = opt.weight_decay
  if opt.name == 'sgd':
    main = optax.sgd(schedule, momentum=opt.get('momentum') or None)
  elif opt.name == 'adam':
    main = optax.adam(schedule, b1=opt.get('b1', 0.9), b2=opt.get('b2', 0.999),
                      eps=opt.get('eps', 1e-8))
  elif opt.name == 'adamw':
    main = optax.adamw(schedule, b1=opt.get('b1', 0.9), b2=opt.get('b2', 0.999),
                       eps=opt.get('eps', 1e-8), weight_decay=wd,
                       mask=decay_mask)
  else:
    raise ConfigError(f'optimizer.name {opt.name!r} is unknown; use sgd, adam '
                      'or adamw')
  chain = []
  if opt.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if wd and opt.name != 'adamw':
    chain.append(optax.add_decayed_weights(wd, mask=decay_mask))
  return optax.chain(*chain, main), schedule
