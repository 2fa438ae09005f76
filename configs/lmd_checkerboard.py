"""LMD (Lagrangian map distillation, Boffi et al. 2024) of the checkerboard teacher."""
from configs import base


def get_config(arg=None):
  return base.distillation_2d('lmd', arg)
