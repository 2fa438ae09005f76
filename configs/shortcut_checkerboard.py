"""Shortcut models on the 2-D checkerboard: configs/lsd_checkerboard.py with loss.name='shortcut'
and the official recipe's loss values (kvfrans/shortcut-models train.py `model_config`), everything
else equal, so the self-distillation losses compare at one budget.

From the official defaults: T = denoise_timesteps = 128, one eighth of each batch bootstrap
(bootstrap_every = 8, so diag_fraction = 7/8), the bootstrap targets from the target EMA at 0.999
(bootstrap_ema = 1, target_update_rate = 0.999), no guidance (unconditional data), no dt bias.
Their clip at ±4 is for unit-variance latents; the checkerboard's std is about 2.3 per axis
(U[−4, 4]), so the clip is scaled to ±9 (about four standard deviations, as theirs)."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'shortcut'
  c.loss.diag_fraction = 7 / 8
  c.loss.shortcut.clip = 9.0
  return c
