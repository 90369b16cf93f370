"""The pictures and pages `experiments.explain` writes: heat-map grids and
attention maps (matplotlib), tokens on coloured backgrounds (a PNG drawn
with PIL, and the same as an HTML page), an embedding projection.

Colours: signed values (attributions) are blue-white-red with white at 0,
scaled to the largest |value| of each example; unsigned ones (the rollout's
near-uniform shares) are white-red, stretched from each example's least
value to its largest.
"""

import html

import matplotlib
matplotlib.use('Agg')  # Files only, no display.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A token row: (title, [token text], [value per token]).
TokenRow = tuple[str, list[str], np.ndarray]
RETURN = '\u21b5'  # Shown where a token holds a newline.


def _save(fig, path: str) -> None:
  fig.savefig(path, dpi=80, bbox_inches='tight')
  plt.close(fig)


def _no_ticks(axes) -> None:
  for ax in np.ravel(axes):
    ax.set_xticks([])
    ax.set_yticks([])


def _gray(image_HxWxC: np.ndarray) -> np.ndarray:
  return image_HxWxC[..., 0] if image_HxWxC.shape[-1] == 1 else image_HxWxC


def scaled(values: np.ndarray, signed: bool) -> np.ndarray:
  """Signed: values / max |value|, in [-1, 1]; unsigned: stretched from
  their min to their max, in [0, 1]."""
  values = np.asarray(values, np.float64)
  if not values.size:
    return values
  if signed:
    return values / max(np.abs(values).max(), 1e-12)
  return (values - values.min()) / max(np.ptp(values), 1e-12)


def _colour(value: float, signed: bool) -> tuple[int, int, int]:
  """RGB 0..255 of a `scaled` value."""
  cmap = matplotlib.colormaps['bwr' if signed else 'Reds']
  x = 0.5 + 0.5 * value if signed else value
  r, g, b, _ = cmap(float(np.clip(x, 0, 1)))
  return int(255 * r), int(255 * g), int(255 * b)


def image_attributions(images, titles, class_names, predicted, attr_CxB,
                       heading, path) -> None:
  """Rows: each input, then its heat map for every class (the predicted
  one framed); red pushes that class's logit up, blue down."""
  num_classes, b = attr_CxB.shape[:2]
  fig, axes = plt.subplots(b, num_classes + 1, squeeze=False,
                           figsize=(1.1 * (num_classes + 1), 1.25 * b))
  for i in range(b):
    heat_CxHxW = scaled(attr_CxB[:, i].mean(axis=-1), signed=True)
    axes[i, 0].imshow(_gray(images[i]), cmap='gray', interpolation='nearest')
    axes[i, 0].set_title(titles[i], fontsize=7, loc='left')
    for c in range(num_classes):
      ax = axes[i, c + 1]
      ax.imshow(heat_CxHxW[c], cmap='bwr', vmin=-1, vmax=1,
                interpolation='nearest')
      if i == 0:
        ax.set_title(class_names[c], fontsize=8)
      if c == predicted[i]:
        for spine in ax.spines.values():
          spine.set_edgecolor('black')
          spine.set_linewidth(2.5)
  _no_ticks(axes)
  fig.suptitle(heading, fontsize=9)
  _save(fig, path)


def patch_grid(relevance_N: np.ndarray, height: int, width: int
               ) -> np.ndarray:
  """N positions (patches or feature-map cells, row-major) -> [H, W]."""
  rows = int(round(np.sqrt(len(relevance_N) * height / width)))
  grid = relevance_N.reshape(rows, len(relevance_N) // rows)
  return np.kron(grid, np.ones((height // grid.shape[0],
                                width // grid.shape[1])))


def image_rollout(images, titles, relevance_BxN, heading, path) -> None:
  """Rows: each input; the share of the output read from each patch;
  that map over the input."""
  b = len(images)
  fig, axes = plt.subplots(3, b, squeeze=False, figsize=(1.3 * b, 4.2))
  for i in range(b):
    image = np.asarray(_gray(images[i]), np.float32)
    heat = scaled(patch_grid(relevance_BxN[i], *images.shape[1:3]), False)
    axes[0, i].imshow(image, cmap='gray', interpolation='nearest')
    axes[0, i].set_title(titles[i], fontsize=6)
    axes[1, i].imshow(heat, cmap='Reds', vmin=0, vmax=1,
                      interpolation='nearest')
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
    alpha = 0.8 * heat[..., None]
    axes[2, i].imshow(0.6 * rgb * (1 - alpha) +
                      alpha * np.array([1.0, 0.1, 0.1]),
                      interpolation='nearest')
  _no_ticks(axes)
  fig.suptitle(heading, fontsize=8)
  _save(fig, path)


def attention_heads(weights, tokens, title, path) -> None:
  """A grid of [L, S] maps: one row per layer, one column per head; token
  labels on the axes when there are at most 40."""
  layers, heads = len(weights), weights[0].shape[0]
  labelled = tokens is not None and len(tokens) <= 40
  side = max(2.8, 0.11 * len(tokens)) if labelled else 2.2  # Inches.
  fig, axes = plt.subplots(layers, heads, squeeze=False, layout='constrained',
                           figsize=(side * heads, side * layers))
  _no_ticks(axes)
  for l, w_HxLxS in enumerate(weights):
    for h in range(heads):
      ax = axes[l, h]
      ax.imshow(w_HxLxS[h], cmap='viridis', vmin=0, interpolation='nearest')
      ax.set_title(f'layer {l} head {h}', fontsize=7)
      if labelled:
        ticks = range(len(tokens))
        ax.set_xticks(ticks, tokens, fontsize=6, rotation=90)
        ax.set_yticks(ticks, tokens, fontsize=6)
  fig.suptitle(title + ' (rows: queries, columns: keys)', fontsize=9)
  _save(fig, path)


def projection(points_Nx2, labels, groups, title, path) -> None:
  """A scatter of labelled points; group -g (a star) is query g, group g
  its neighbours, in the same colour."""
  fig, ax = plt.subplots(figsize=(7, 6))
  cmap = matplotlib.colormaps['tab10']
  for (x, y), label, group in zip(points_Nx2, labels, groups):
    query = group < 0
    colour = cmap(abs(group) % 10)
    ax.scatter([x], [y], color=colour, s=60 if query else 14,
               marker='*' if query else 'o')
    ax.annotate(label, (x, y), fontsize=9 if query else 7, color=colour,
                weight='bold' if query else 'normal', xytext=(3, 2),
                textcoords='offset points')
  ax.set_title(title, fontsize=9)
  _no_ticks(ax)
  _save(fig, path)


def _shown(text: str) -> str:
  return text.replace('\n', RETURN + '\n')


def _font(size: int) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(
      matplotlib.font_manager.findfont('DejaVu Sans'), size)


def token_colours(rows: list[TokenRow], path: str, signed: bool,
                  width: int = 900) -> None:
  """A PNG: each row's title, then its tokens flowing over lines, each on a
  background coloured by its value; a newline inside a token (shown as a
  return arrow) starts a new line."""
  font, bold = _font(15), _font(13)
  line, pad = 22, 8
  boxes, titles = [], []  # Laid out first: the height is known after.
  y = pad
  for title, texts, values in rows:
    titles.append((y, title))
    x, y = pad, y + line
    for text, value in zip(texts, scaled(values, signed)):
      for k, part in enumerate(_shown(text).split('\n')):
        if k:
          x, y = pad, y + line
        w = font.getlength(part) if part else 4
        if x + w > width - pad and x > pad:
          x, y = pad, y + line
        boxes.append((x, y, w, part, _colour(value, signed)))
        x += w
    y += line + pad
  image = Image.new('RGB', (width, y + pad), 'white')
  draw = ImageDraw.Draw(image)
  for top, title in titles:
    draw.text((pad, top + 3), title, fill=(60, 60, 60), font=bold)
  for x, top, w, text, colour in boxes:
    draw.rectangle([x, top + 1, x + w, top + line - 2], fill=colour)
    draw.text((x, top + 2), text.replace('\t', ' '), fill='black', font=font)
  image.save(path, optimize=True)


def token_page(rows: list[TokenRow], heading: str, path: str,
               signed: bool) -> None:
  """The same as `token_colours`, as an HTML page; hovering a token shows
  its value."""
  parts = ['<!doctype html><meta charset="utf-8">',
           f'<title>{html.escape(heading)}</title>',
           '<body style="font-family:sans-serif;max-width:60em">',
           f'<h3>{html.escape(heading)}</h3>']
  for title, texts, values in rows:
    parts.append(f'<p><b>{html.escape(title)}</b><br>'
                 '<span style="white-space:pre-wrap">')
    for text, value, x in zip(texts, values, scaled(values, signed)):
      r, g, b = _colour(x, signed)
      parts.append(f'<span title="{value:.4g}" style="background:'
                   f'rgb({r},{g},{b})">{html.escape(_shown(text))}</span>')
    parts.append('</span></p>')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(parts) + '\n</body>\n')
