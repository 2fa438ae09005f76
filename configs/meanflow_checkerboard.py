"""MeanFlow self-distillation on the 2-D checkerboard: configs/lsd_checkerboard.py with
loss.name='meanflow', everything else equal, so the self-distillation losses compare at one budget.

The loss keeps the official adaptive weighting (meanflow.adaptive_p = 1). On 2-D data it biases the
velocity: more steps sample worse. --config.loss.meanflow.adaptive_p=0 samples far better at 8 steps
and somewhat worse at 1 (docs/losses.md, "What the 2-D study measured for self-distillation")."""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'meanflow'
  return c
