"""ITVM distillation of the MNIST teacher (configs/fm_mnist.py), from its weights, on a laptop CPU.

The student has the teacher's network and data; Adam 3e-4, cosine decay, half of each batch
diagonal, and ITVM's defaults (docs/itvm.md). The teacher is distilled with classifier-free guidance
w = 2 (teacher.guidance): the student learns in one jump the map of the guided teacher's ODE. On this
machine's 3000-step teacher the unguided ODE draws the requested digit 93 % of the time, the guided
one 99.8 %, at a larger feature distance (46 against 10: less varied digits; README, "MNIST").
`--config.teacher.guidance=1` distils the unguided map instead.
`--config.teacher.workdir` points at the trained teacher (else one is trained first).

Budget: 1000 steps from the 3000-step teacher gave 99.7 % digit accuracy and a feature distance of
33.5 at 1 step; 500 steps from a 1500-step teacher gave 99.0 % and 94.4 (benchmarks/RESULTS.md,
"MNIST on the 2-core CPU" and "MNIST study"). Neither run separates the student's steps from the
teacher's, and no longer run was made, so convergence at 1000 steps is not shown; lmd_mnist and
emd_mnist inherit the budget.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name='npz', path='', image_size=28, channels=1, num_classes=10, class_conditional=True,
      random_flip=False, batch_size=64, sigma0=0.5, data_dir='', num_workers=1))

  c.model = ml_collections.ConfigDict()
  c.model.name = 'unet'
  c.model.unet = dict(channels=32, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=(),
                      dropout=0.0)
  c.model.dit = dict(size='XS', patch_size=4, dropout=0.0,  # used with --config.model.name=dit
                     qk_norm=False, time_embedding='fourier')
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype, c.model.remat = 'float32', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=0.5))
  c.loss.name = 'itvm'
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=3e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip=1.0,
      schedule='cosine', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=1000, log_every=50, checkpoint_every=250, keep_checkpoints=2,
      # A short run: its EMAs keep rate^steps of the start (configs/fm_mnist.py).
      eval_ema_rates=(0.99, 0.995), init_from_teacher=True, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=500))

  c.teacher = common.teacher('configs/fm_mnist.py')
  c.teacher.guidance = 2.0
  c.eval = common.eval_images()
  c.eval.update(steps=(1, 2, 4, 8), fid_samples=1000, batch_size=250, grid_size=10,
                ode_rtol=1e-3, ode_atol=1e-3)
  c.mesh = common.mesh()

  if arg == 'smoke':
    common.smoke_images(c)
    c.eval.grid_size = 10
  return c
