"""LSD self-distillation on CIFAR-10 with the self-distillation paper's recipe (Boffi, Albergo &
Vanden-Eijnden 2025, who report FID 8.10/4.37/3.34/3.33 at 1/2/4/8 steps).

EDM's DDPM++ CIFAR-10 network (SongUNet: 128 channels ×[2,2,2], 4 blocks, attention at 16×16,
dropout 0.13; 55.7 M parameters), batch 512, RAdam at lr 1e-2·1/√max(step/35000, 1), clip 1, EMAs 0.999 and 0.9999, three
quarters of each batch diagonal, 400k steps. The time features (16 frequencies up to 32π) are ours:
smoother in (s, t) than diffusion's 1000-scale positional embeddings, which the jvp needs (2-D
evidence only). A DiT instead: --config.model.name=dit.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='cifar10', image_size=32, class_conditional=False, random_flip=True,
      batch_size=512,   # the global batch, over all devices and hosts
      sigma0=0.5,       # base noise std for images in [-1, 1]
      data_dir='',      # tfds data_dir holding the ArrayRecord build ('' = tfds' default)
      num_workers=4))   # grain read threads per process

  c.model = ml_collections.ConfigDict()
  c.model.name = 'unet'
  c.model.unet = dict(channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,),
                      dropout=0.13)
  c.model.dit = dict(size='S', patch_size=2, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype = 'float32'   # activations: float32 | bfloat16 (parameters stay float32)
  c.model.remat = 'none'      # none | full | dots: recompute blocks in the backward (memory)
  c.model.attention = 'blockwise'   # xla | blockwise: the same function (docs/attention.md)

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=0.75))
  c.loss.name = 'lsd'
  c.loss.update(common.loss_options())
  # The self-distillation paper trains its image models with the learned weighting
  # exp(−w_φ(s,t))·ℓ + w_φ(s,t) (EDM2's, over two times): a loss whose scale varies by orders of
  # magnitude over (s, t) would otherwise be dominated by its largest pairs.
  c.loss.weighting = 'learned'

  c.optim = ml_collections.ConfigDict(dict(
      name='radam', lr=1e-2, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='sqrt', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=400_000, log_every=100, checkpoint_every=5000, keep_checkpoints=3,
      eval_ema_rates=(0.999, 0.9999), init_from_teacher=False, max_bad_steps=0,
      allow_config_change=False, wandb_project='',
      plot_every=10_000))   # sample grids to TensorBoard and plots/grid_<step>.png

  c.teacher = common.teacher()  # none: self-distillation
  c.eval = common.eval_images()
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_images(c)
  return c
