"""Class-conditional flow-matching teacher on ImageNet 64×64 (the teacher of configs/itvm_imagenet64.py).

EDM's ImageNet-64 network, ADM (192 channels ×[1,2,3,4], 3 blocks, attention at 32/16/8,
dropout 0.1; 295.9 M parameters), labels dropped to a null class 10 % of the time (classifier-free guidance),
bfloat16 activations. Adam at 1e-4 with 5000 warm-up steps: EDM's ImageNet-64 rate scaled to our
batch of 1024, not a paper's flow-map setting.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='imagenet2012',  # or imagenet_resized/64x64
      image_size=64, class_conditional=True, random_flip=True,
      batch_size=1024, sigma0=0.5, data_dir='', num_workers=4))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'adm'  # EDM's ImageNet-64 network (DhariwalUNet)
  c.model.adm = dict(channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
                     attn_resolutions=(32, 16, 8), dropout=0.1)
  c.model.dit = dict(size='B', patch_size=4, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype, c.model.remat = 'bfloat16', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=1.0))
  c.loss.name = 'fm'
  c.loss.label_dropout = 0.1
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='constant', warmup_steps=5000, sqrt_steps=35_000))

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
