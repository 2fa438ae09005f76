"""MeanFlow (Geng et al. 2025) on the checkerboard, from scratch."""
from configs import base


def get_config(arg=None):
  return base.self_distillation_2d('meanflow', arg)
