"""LSD self-distillation on MNIST from scratch: configs/fm_mnist.py with loss.name='lsd' and three
quarters of each batch diagonal, everything else equal (no teacher)."""
from configs import fm_mnist


def get_config(arg=None):
  c = fm_mnist.get_config(arg)
  c.loss.name = 'lsd'
  c.loss.diag_fraction = 0.75
  return c
