"""MeanFlow self-distillation on the 2-D checkerboard: configs/lsd_checkerboard.py with
loss.name='meanflow', everything else equal, so the self-distillation losses compare at one budget."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'meanflow'
  return c
