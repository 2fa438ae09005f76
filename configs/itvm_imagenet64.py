"""ITVM distillation of a class-conditional ImageNet 64×64 flow-matching teacher
(configs/fm_imagenet64.py), from its weights, in float32.

The network is EDM's ImageNet-64 ADM, as the teacher's. The teacher is trained first into <workdir>/teacher when no checkpoint is there (or point
teacher.workdir at one: it is opened with the config saved beside it). The student has the teacher's
network and trains 200k steps of Adam at 1e-4, half of each batch diagonal (our choice, as in 2-D).
ITVM's defaults come from 2-D evidence (docs/itvm.md), not from an image run. A DiT instead, for
student and teacher alike: --config.model.name=dit (the teacher through its own config, or
teacher.workdir pointing at a DiT teacher).
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='imagenet2012', image_size=64, class_conditional=True, random_flip=True,
      batch_size=1024, sigma0=0.5, data_dir='', num_workers=4))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'adm'  # EDM's ImageNet-64 network (DhariwalUNet)
  c.model.adm = dict(channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
                     attn_resolutions=(32, 16, 8), dropout=0.1)
  c.model.dit = dict(size='B', patch_size=4, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  # float32, not the teacher's bfloat16: ITVM's terminal term divides a difference of two outputs by
  # τ, which carries about five times FM's bfloat16 error (benchmarks/RESULTS.md, "bfloat16").
  c.model.dtype, c.model.remat = 'float32', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=0.5))
  c.loss.name = 'itvm'
  c.loss.label_dropout = 0.1
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='constant', warmup_steps=5000, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=200_000, log_every=100, checkpoint_every=5000, keep_checkpoints=3,
      eval_ema_rates=(0.999, 0.9999), init_from_teacher=True, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=10_000))

  c.teacher = common.teacher('configs/fm_imagenet64.py')
  c.teacher.guidance = 1.0  # classifier-free guidance of the distilled teacher velocity
  c.eval = common.eval_images()
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_images(c)
  return c
