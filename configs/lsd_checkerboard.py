"""LSD self-distillation on the 2-D checkerboard, from scratch (no teacher).

A 4×256 MLP, batch 2048, 8000 steps of Adam at 1e-3 with cosine decay, three quarters of each batch
diagonal (flow matching) and the rest LSD's self-consistency term.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='checkerboard',  # checkerboard | eight_gaussians | two_moons | spirals
      batch_size=2048,      # the global batch, over all devices and hosts
      sigma0='adaptive'))   # base noise std: a number, or 'adaptive' (the data's std per axis)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'mlp'
  c.model.mlp = dict(width=256, depth=4, activation='gelu')
  c.model.num_fourier, c.model.max_freq = 8, 4.0
  c.model.dtype, c.model.remat = 'float32', 'none'

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=0.75))
  c.loss.name = 'lsd'
  c.loss.update(common.loss_options())
  c.loss.lsd.teacher = 'online'  # the target velocity v_θ(t, t, ·) from the online parameters

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='cosine', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=8000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
      eval_ema_rates=(0.999,), init_from_teacher=False, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=0))

  c.teacher = common.teacher()  # none: self-distillation
  c.eval = common.eval_2d()
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_2d(c)
  return c
