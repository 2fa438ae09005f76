"""LMD distillation of the checkerboard teacher (Boffi et al. 2024)."""
from configs import base


def get_config(arg=None):
  c = base.checkerboard_2d(base.get_config())
  c.loss.name = 'lmd'
  c.teacher.config = 'configs/fm_checkerboard.py'
  c.train.init_from_teacher = True
  c.train.num_steps = 3000
  c.optim.lr = 1e-4
  return base.finish(c, arg)
