"""ESD self-distillation on the 2-D checkerboard: configs/lsd_checkerboard.py with
loss.name='esd', everything else equal, so the self-distillation losses compare at one budget.

At this setting ESD's off-diagonal residual does not settle and can blow up (two moons), and a lower
learning rate does not make its samples good (docs/losses.md, "What the 2-D study measured for
self-distillation")."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'esd'
  return c
