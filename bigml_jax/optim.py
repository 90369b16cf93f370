"""The optax transformation and learning-rate schedule described by a config.

config.optimizer fields: name (sgd | adam | adamw), learning_rate, schedule
(constant | cosine | linear, each after `warmup_steps` of linear warmup from
0), weight_decay, grad_clip_norm (0 = off), and optionally momentum (sgd),
b1, b2, eps (adam, adamw). Any mapping works (a ConfigDict, a dict); fields
left out take the defaults of `OPTIONAL_FIELDS`.
"""

from collections.abc import Mapping
from typing import Any, TYPE_CHECKING

import jax
import optax

if TYPE_CHECKING:  # Annotations only: GPU images lack ml_collections.
  import ml_collections

from bigml_jax.errors import ConfigError


REQUIRED_FIELDS = ('name', 'learning_rate')
OPTIONAL_FIELDS = {'schedule': 'constant', 'warmup_steps': 0,
                   'weight_decay': 0.0, 'grad_clip_norm': 0.0,
                   'momentum': None, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-8}


def optimizer_fields(opt: 'Mapping[str, Any] | ml_collections.ConfigDict'
                     ) -> dict[str, Any]:
  """Every field of `opt`, defaults filled in; ConfigError names a missing
  or unknown (misspelt) one."""
  given = dict(opt.items())
  known = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ConfigError(f'optimizer has no field(s) {", ".join(unknown)}; its '
                      f'fields are {", ".join(known)}')
  missing = [k for k in REQUIRED_FIELDS if k not in given]
  if missing:
    raise ConfigError(f'optimizer needs {" and ".join(missing)}')
  return {**OPTIONAL_FIELDS, **given}


def make_schedule(opt: 'Mapping[str, Any] | ml_collections.ConfigDict',
                  total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step."""
  opt = optimizer_fields(opt)
  lr, warmup = opt['learning_rate'], opt['warmup_steps']
  decay_steps = max(total_steps - warmup, 1)
  if opt['schedule'] == 'constant':
    after = optax.constant_schedule(lr)
  elif opt['schedule'] == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps)
  elif opt['schedule'] == 'linear':
    after = optax.linear_schedule(lr, 0.0, decay_steps)
  else:
    raise ConfigError(f'optimizer.schedule {opt["schedule"]!r} is unknown; '
                      'use constant, cosine or linear')
  if not warmup:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params):
  """Weight decay applies to kernels and embeddings only, not to biases or
  norm scales: those are exactly the parameters with fewer than 2 dims."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(opt: 'Mapping[str, Any] | ml_collections.ConfigDict',
                   total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (transformation, schedule) for `config.optimizer`.

  The schedule is returned too (optax factories return only the
  transformation) so that loops can log the learning rate. AdamW uses
  decoupled weight decay scaled by the learning rate (Loshchilov & Hutter);
  for sgd and adam, weight_decay adds an L2 gradient term.
  """
  opt = optimizer_fields(opt)
  schedule = make_schedule(opt, total_steps)
  name, wd = opt['name'], opt['weight_decay']
  if name == 'sgd':
    main = optax.sgd(schedule, momentum=opt['momentum'] or None)
  elif name == 'adam':
    main = optax.adam(schedule, b1=opt['b1'], b2=opt['b2'], eps=opt['eps'])
  elif name == 'adamw':
    main = optax.adamw(schedule, b1=opt['b1'], b2=opt['b2'], eps=opt['eps'],
                       weight_decay=wd, mask=decay_mask)
  else:
    raise ConfigError(f'optimizer.name {name!r} is unknown; use sgd, adam '
                      'or adamw')
  chain = []
  if opt['grad_clip_norm']:
    chain.append(optax.clip_by_global_norm(opt['grad_clip_norm']))
  if wd and name != 'adamw':
    chain.append(optax.add_decayed_weights(wd, mask=decay_mask))
  return optax.chain(*chain, main), schedule
