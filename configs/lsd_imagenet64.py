"""Class-conditional LSD self-distillation on ImageNet 64×64: configs/fm_imagenet64.py with
loss.name='lsd', three quarters of each batch diagonal and the learned loss weighting, everything
else equal."""
from configs import fm_imagenet64


def get_config(arg=None):
  c = fm_imagenet64.get_config(arg)
  c.loss.name = 'lsd'
  c.loss.diag_fraction = 0.75
  c.loss.weighting = 'learned'   # as the self-distillation paper trains its image models
  return c
