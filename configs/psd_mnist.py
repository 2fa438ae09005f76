"""PSD-M self-distillation on MNIST from scratch: configs/lsd_mnist.py with loss.name='psd',
everything else equal, so the self-distillation losses compare at one budget.

Budget (lsd_mnist's): not shown converged. At 1000 of the 3000 steps (MNIST study, seed 0) its
1/2/4-step samples are the asked digit 90.2 / 84.7 / 84.0 % of the time, the best of the
from-scratch losses there."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'psd'
  return c
