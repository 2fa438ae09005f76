"""PSD self-distillation on the 2-D checkerboard: configs/lsd_checkerboard.py with loss.name='psd',
everything else equal, so the self-distillation losses compare at one budget. PSD-M (γ = 1/2);
--config.loss.psd.gamma=uniform for PSD-U."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'psd'
  return c
