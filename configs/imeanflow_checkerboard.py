"""Improved MeanFlow (iMF) on the 2-D checkerboard, from scratch: configs/lsd_checkerboard.py (the
same MLP, batch, optimiser and 8000 steps) with loss.name='imeanflow' and iMF's loss recipe from
its official code (Lyy-iiis/imeanflow, imf.py and configs/default.py at bf60cd7), translated to our
time convention:

- Times: both logit-normal, sigmoid(N(+0.4, 1)) (their P_mean −0.4, P_std 1 with noise at t = 1),
  half of each batch diagonal (their data_proportion 0.5).
- The adaptive weighting ℓ / sg((ℓ + 0.01)^1) (norm_p 1, norm_eps 0.01), the registry default.
- No guidance: the data are unconditional (their ω and guidance interval only act on class labels).

Their optimiser (Adam b2 0.95 at 1e-4, batch 1024) is for DiT on ImageNet latents; the 2-D budget
keeps LSD's. configs/meanflow_checkerboard.py keeps LSD's uniform times and 3/4 diagonal: for a
comparison at equal times, --config.loss.time_sampler=uniform --config.loss.diag_fraction=0.75.
"""
from configs import lsd_checkerboard


def get_config(arg=None):
  c = lsd_checkerboard.get_config(arg)
  c.loss.name = 'imeanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.5
  return c
