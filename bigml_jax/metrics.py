"""Where logged metrics go: console (absl), `metrics.jsonl`, TensorBoard.

Only the primary process writes; the others get a writer that drops
everything, so call sites need no `if process_index == 0`.
"""

import io
import json
import math
import os
import sys
import time

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from bigml_jax import workdir as workdir_lib


def _import_tensorboardx():
  """tensorboardX, imported without torch: where torch is installed (the hf
  extra) tensorboardX imports it, 2 s at every start, only to accept
  torch.Tensor values, which nothing here passes."""
  if 'torch' in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()


def image_grid(images: np.ndarray, pad: int = 1) -> np.ndarray:
  """[N, H, W, C] floats in [0, 1] -> one uint8 [rows*(H+pad), cols*(W+pad), C]
  grid, as square as possible."""
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
  pixels = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
  for i in range(n):
    r, q = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + q * (w + pad):pad + q * (w + pad) + w] = pixels[i]
  return grid


def _format(value: float) -> str:
  return f'{value:.4g}' if isinstance(value, float) else str(value)


def _drop_rows_after(path: str, step: int) -> None:
  """Keeps the rows of `path` up to `step`, the step a run resumes from.

  A run killed after its last checkpoint logged steps it will log again;
  a kill mid-write leaves a partial last line. Neither may stay.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  if step == 0 and any(line.strip() for line in lines):
    # A run that starts afresh never deletes rows: those of an earlier
    # start (killed before its first checkpoint) move aside.
    aside = os.path.join(os.path.dirname(path),
                         f'metrics-{time.strftime("%Y%m%d-%H%M%S")}.jsonl')
    os.replace(path, aside)
    logging.info('%s holds rows of an earlier start of this run; moved them '
                 'to %s', path, aside)
    return
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if row.get('step', 0) <= step:
      kept.append(line.rstrip('\n') + '\n')
  if kept != lines:  # Also when only the last line's newline was lost.
    workdir_lib.write_atomically(path, ''.join(kept))
  if len(kept) < len(lines):
    logging.info('dropped %d row(s) past step %d from %s (logged after the '
                 'last checkpoint, or by an earlier run)',
                 len(lines) - len(kept), step, path)


class MetricWriter:
  """Writes scalars for a (step, split) to every sink; `close()` flushes.

  `metrics.jsonl` gets one object per call: {"step": s, "split": split, ...};
  rows past `initial_step` (left by a run killed after its last checkpoint)
  are dropped first. TensorBoard tags are "split/name".
  """

  def __init__(self, workdir: str, *, enabled: bool = True,
               total_steps: int | None = None, initial_step: int = 0):
    self.enabled = enabled
    self._workdir = workdir
    self._jsonl = self._tb = self._bar = None
    if not enabled:
      return
    path = os.path.join(workdir, 'metrics.jsonl')
    _drop_rows_after(path, initial_step)
    self._jsonl = open(path, 'a')
    # TensorBoard hides a killed run's events past the resumed step too.
    self._tb = tensorboardX.SummaryWriter(workdir, flush_secs=10,
                                          purge_step=initial_step + 1)
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

  def write_images(self, step: int, name: str, images: np.ndarray) -> None:
    """Writes images [N, H, W, C] (floats in [0, 1]) as one grid: a PNG
    `workdir/name_STEP.png` and a TensorBoard image."""
    if not self.enabled:
      return
    grid = image_grid(images)
    png = io.BytesIO()
    Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid).save(
        png, format='png')
    workdir_lib.write_atomically(
        os.path.join(self._workdir, f'{name}_{step:06d}.png'), png.getvalue())
    self._tb.add_image(name, grid, step, dataformats='HWC')

  def write_texts(self, step: int, name: str, texts: list[str]) -> None:
    """Writes texts (e.g. an LM's samples) to `workdir/name_STEP.txt`, one
    after another under '--- i' lines, and as TensorBoard text; logs the
    first."""
    if not self.enabled:
      return
    body = ''.join(f'--- {i}\n{text}\n' for i, text in enumerate(texts))
    workdir_lib.write_atomically(
        os.path.join(self._workdir, f'{name}_{step:06d}.txt'), body)
    # TensorBoard renders Markdown: indented, each sample is shown verbatim.
    self._tb.add_text(name, '\n\n'.join(
        f'sample {i}:\n\n' + '\n'.join('    ' + line
                                         for line in text.split('\n'))
        for i, text in enumerate(texts)), step)
    logging.info('step %d %s[0] %r', step, name, texts[0] if texts else '')

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
