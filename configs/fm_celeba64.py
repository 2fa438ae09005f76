"""Flow-matching teacher on CelebA 64×64 (centre-cropped to 140, resized), unconditional.

EDM's FFHQ/AFHQ-64 DDPM++ network size (128 channels ×[1,2,2,2], 4 blocks, attention at 16×16,
dropout 0.05) with the self-distillation paper's CIFAR-10 optimiser (RAdam, lr 1e-2·1/√max(step/35000,
1), clip 1, EMAs 0.999 and 0.9999): our choice for a data set the papers do not report.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='celeb_a', image_size=64, class_conditional=False, random_flip=True,
      batch_size=512, sigma0=0.5, data_dir='', num_workers=4))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'unet'
  c.model.unet = dict(channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4,
                      attn_resolutions=(16,), dropout=0.05)
  c.model.dit = dict(size='S', patch_size=4, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype, c.model.remat = 'float32', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=1.0))
  c.loss.name = 'fm'
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='radam', lr=1e-2, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='sqrt', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=400_000, log_every=100, checkpoint_every=5000, keep_checkpoints=3,
      eval_ema_rates=(0.999, 0.9999), init_from_teacher=False, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=10_000))

  c.teacher = common.teacher()
  c.eval = common.eval_images()
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_images(c)
  return c
