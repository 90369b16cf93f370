"""Where logged metrics go: console (absl), `metrics.jsonl`, TensorBoard.

Only the primary process writes; the others get a writer that drops
everything, so call sites need no `if process_index == 0`.
"""

import json
import math
import os
import sys

from absl import logging
import tensorboardX
import tqdm


def _format(value: float) -> str:
  return f'{value:.4g}' if isinstance(value, float) else str(value)


class MetricWriter:
  """Writes scalars for a (step, split) to every sink; `close()` flushes.

  `metrics.jsonl` gets one object per call: {"step": s, "split": split, ...}.
  TensorBoard tags are "split/name".
  """

  def __init__(self, workdir: str, *, enabled: bool = True,
               total_steps: int | None = None, initial_step: int = 0):
    self.enabled = enabled
    self._jsonl = self._tb = self._bar = None
    if not enabled:
      return
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    self._tb = tensorboardX.SummaryWriter(workdir, flush_secs=10)
    if total_steps and sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=initial_step,
                            unit='step', dynamic_ncols=True)

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': step, 'split': split, **scalars})
                      + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      if math.isfinite(value):
        self._tb.add_scalar(f'{split}/{name}', value, step)
    line = ' '.join(f'{k}={_format(v)}' for k, v in scalars.items())
    logging.info('step %d %s %s', step, split, line)
    if self._bar is not None:
      self._bar.set_postfix_str(f'{split} loss={_format(scalars.get("loss"))}')

  def advance(self, step: int) -> None:
    """Moves the progress bar (if any) to `step`."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._tb.close()
    self._jsonl.close()
