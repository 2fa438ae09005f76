"""LSD (Lagrangian) self-distillation on the checkerboard, from scratch (no teacher)."""
from configs import base


def get_config(arg=None):
  c = base.checkerboard_2d(base.get_config())
  c.loss.name = 'lsd'
  c.train.num_steps = 8000
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return base.finish(c, arg)
