"""MeanFlow (Geng et al. 2025) on the checkerboard, from scratch (no teacher)."""
from configs import base


def get_config(arg=None):
  c = base.checkerboard_2d(base.get_config())
  c.loss.name = 'meanflow'
  c.train.num_steps = 8000
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return base.finish(c, arg)
