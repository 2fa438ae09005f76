"""ITVM distillation of the CIFAR-10 flow-matching teacher (configs/fm_cifar10.py), from its weights.

The student has the teacher's network (EDM's DDPM++ CIFAR-10 size) and trains 200k steps of Adam
at 1e-4, half of each batch diagonal: our choice, as in 2-D, not a paper's. ITVM's defaults (target
EMA 0.9, u = t − τ, τ = 0.1, the teacher's Heun step for t − s ≤ τ) come from 2-D evidence
(docs/itvm.md); no image run has tuned them.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='cifar10', image_size=32, class_conditional=False, random_flip=True,
      batch_size=512, sigma0=0.5, data_dir='', num_workers=4))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'unet'
  c.model.unet = dict(channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,),
                      dropout=0.13)
  c.model.dit = dict(size='S', patch_size=2, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype, c.model.remat = 'float32', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=0.5))
  c.loss.name = 'itvm'
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='constant', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=200_000, log_every=100, checkpoint_every=5000, keep_checkpoints=3,
      eval_ema_rates=(0.999, 0.9999), init_from_teacher=True, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=10_000))

  c.teacher = common.teacher('configs/fm_cifar10.py')
  c.eval = common.eval_images()
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_images(c)
  return c
