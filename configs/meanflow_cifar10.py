"""MeanFlow on CIFAR-10 in the self-distillation recipe: configs/lsd_cifar10.py with loss.name='meanflow', everything else equal."""
from configs import lsd_cifar10


def get_config(arg=None):
  c = lsd_cifar10.get_config(arg)
  c.loss.name = 'meanflow'
  return c
