"""PSD-M self-distillation on CIFAR-10 (the paper reports FID 12.81/8.43/5.96/5.07 at 1/2/4/8 steps): configs/lsd_cifar10.py with loss.name='psd', everything else equal."""
from configs import lsd_cifar10


def get_config(arg=None):
  c = lsd_cifar10.get_config(arg)
  c.loss.name = 'psd'
  return c
