"""LMD distillation of the MNIST teacher: configs/itvm_mnist.py with loss.name='lmd', everything else
equal (the guided teacher w = 2, its weights, 1000 steps, half of each batch diagonal), so the two
compare at one budget (benchmarks/compare_mnist.py)."""
from configs import itvm_mnist


def get_config(arg=None):
  c = itvm_mnist.get_config(arg)
  c.loss.name = 'lmd'
  return c
