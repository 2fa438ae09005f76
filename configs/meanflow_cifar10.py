"""MeanFlow on CIFAR-10: configs/lsd_cifar10.py (network, optimiser, schedule) with MeanFlow's loss
as its official code trains it (Gsunshine/meanflow), translated to our time convention: both times
logit-normal, sigmoid(N(+0.4, 1)) (their mean −0.4 with noise at t = 1 is +0.4 with data at t = 1),
three quarters of each batch diagonal, and the adaptive weighting ℓ / sg((ℓ + 0.01)^1)."""
from configs import lsd_cifar10


def get_config(arg=None):
  c = lsd_cifar10.get_config(arg)
  c.loss.name = 'meanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.75
  c.loss.meanflow.adaptive_p, c.loss.meanflow.adaptive_c = 1.0, 0.01
  c.loss.weighting = 'none'   # MeanFlow's own adaptive weighting instead
  return c
