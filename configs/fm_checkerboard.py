"""Flow-matching teacher on the checkerboard: the velocity every 2-D distillation run starts from."""
from configs import base


def get_config(arg=None):
  c = base.checkerboard_2d(base.get_config())
  c.loss.name = 'fm'
  c.train.num_steps = 4000
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return base.finish(c, arg)
