"""ITVM distillation of the CIFAR-10 flow-matching teacher (configs/fm_cifar10.py), from its weights.

ITVM's defaults (target EMA 0.99, u = t − τ with τ = 0.05) come from our 2-D evidence (ALGORITHMS.md
§3.4: the paper's full text was not available); no image run has tuned them yet.
"""
from configs import base


def get_config(arg=None):
  return base.image_experiment('itvm', 'cifar10', arg, teacher='configs/fm_cifar10.py')
