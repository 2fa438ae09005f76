"""PSD-M self-distillation on MNIST from scratch: configs/lsd_mnist.py with loss.name='psd',
everything else equal, so the self-distillation losses compare at one budget."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'psd'
  return c
