"""Plots of 2-D samples (PNG files and arrays for TensorBoard)."""
import io

import matplotlib
from etils import epath

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flowmap_jax.evaluation import kl  # noqa: E402


def density_panel(samples: dict, title='', limit=kl.LIMIT, bins=200):
  """Side-by-side 2-D histograms of {label: (N, 2) samples}; returns an RGB uint8 array."""
  n = len(samples)
  fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
  for ax, (label, x) in zip(axes[0], samples.items()):
    x = np.asarray(x)[:200_000]
    ax.hist2d(x[:, 0], x[:, 1], bins=bins, range=[[-limit, limit], [-limit, limit]], cmap='magma')
    ax.set_title(label, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_aspect('equal')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return image


def save_png(image, path):
  """Writes an RGB array as PNG to a local or bucket path (etils.epath), creating its folder."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  plt.imsave(buf, image, format='png')
  path.write_bytes(buf.getvalue())


def image_grid(rows, pad=2):
  """One uint8 RGB mosaic of {label: uint8 (n, H, W, C)}: each entry a row, in order, `pad` pixels of
  white between images; grayscale (C = 1) is shown as gray RGB."""
  rows = [np.asarray(r) for r in rows.values()]
  rows = [np.repeat(r, 3, axis=-1) if r.shape[-1] == 1 else r for r in rows]
  n, H, W, C = rows[0].shape
  grid = np.full((len(rows) * (H + pad) + pad, n * (W + pad) + pad, C), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      top, left = pad + i * (H + pad), pad + j * (W + pad)
      grid[top:top + H, left:left + W] = image
  return grid
