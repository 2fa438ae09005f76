"""The CIFAR-10 flow-matching teacher (of configs/itvm_cifar10.py): configs/lsd_cifar10.py with loss.name='fm' and
no learned weighting, everything else equal."""
from configs import lsd_cifar10


def get_config(arg=None):
  c = lsd_cifar10.get_config(arg)
  c.loss.name = 'fm'
  c.loss.weighting = 'none'   # a teacher as flow matching trains one, not the paper's flow maps
  return c
