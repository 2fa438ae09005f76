"""ITVM distillation of the checkerboard teacher (the embedded default).

`--config.loss.itvm.y_source=online` gives the derivative-free LFMD variant of ALGORITHMS.md §3.4
(y = X_θ(s, u, x_s) with gradient instead of from the target EMA).
"""
from configs import base


def get_config(arg=None):
  return base.distillation_2d('itvm', arg)
