"""EMD distillation of the checkerboard teacher: configs/itvm_checkerboard.py with loss.name='emd',
everything else equal, so the two compare at the same budget."""
from configs import itvm_checkerboard


def get_config(arg=None):
  c = itvm_checkerboard.get_config(arg)
  c.loss.name = 'emd'
  return c
