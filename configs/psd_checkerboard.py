"""PSD (progressive self-distillation, Boffi et al. 2025) on the checkerboard, from scratch:
PSD-M (γ = 1/2); PSD-U by --config.loss.psd.gamma=uniform."""
from configs import base


def get_config(arg=None):
  return base.self_distillation_2d('psd', arg)
