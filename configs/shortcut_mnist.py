"""Shortcut models on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000 steps) with
the official recipe's loss values (kvfrans/shortcut-models train.py `model_config`, as
configs/shortcut_checkerboard.py): T = 128 discrete step sizes, one eighth of each batch bootstrap
(diag_fraction 7/8), bootstrap targets from the target EMA at 0.999, no dt bias, targets clipped at
±4 (theirs, for latents of unit variance; MNIST in [−1, 1] with noise of std 0.5 stays inside it).
No guidance in the bootstrap targets (their default bootstrap_cfg = 0), as for the other
self-distillation rows; `--config.loss.shortcut.bootstrap_cfg=True` is their ImageNet setting
(cfg_scale 1.5)."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'shortcut'
  c.loss.diag_fraction = 7 / 8
  return c
