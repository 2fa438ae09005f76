"""What every experiment shares and would only repeat: loss option blocks, evaluation, mesh, smoke.

Experiment files write out their data, model, loss, optimiser and training blocks themselves; they take
from here only the blocks that are the same across experiments (each can still change any value).
"""
import ml_collections

from flowmap_jax import losses

ARGS = ('', 'smoke')


def check_arg(arg):
  """The config-file argument (`file.py:arg`): '' (the full experiment) or 'smoke'."""
  arg = arg or ''
  if arg not in ARGS:
    raise ValueError(f'Unknown config argument {arg!r}; known: smoke.')
  return arg


def with_arg(c, arg):
  """The config of `file.py:arg`: the experiment itself, or its :smoke variant."""
  if check_arg(arg) == 'smoke':
    if c.data.name == 'latents':
      smoke_latents(c)
    else:
      smoke_images(c)
  return c


def latent_data(resolution, vae_factor=8, latent_channels=4):
  """ImageNet at `resolution` px in the latent space of Stable Diffusion's VAE (data/latents.py):
  data.vae names the user's diffusion_pytorch_model.safetensors (sd-vae-ft-ema or -mse), data.path
  the folder `--mode prepare_latents` writes and training reads; data.images the image set it
  encodes (ADM's centre crop), with how the preparation batches and shards it and stores the
  posterior (float16). The latents are scaled by SD's 0.18215, or standardised per channel when
  data.latent_mean and data.latent_std are given."""
  size = resolution // vae_factor
  return ml_collections.ConfigDict(dict(
      name='latents', path='', vae='', image_size=resolution,
      latent_shape=(size, size, latent_channels),
      latent_scale=0.18215, latent_mean=(), latent_std=(), posterior='sample',
      images=dict(name='imagenet2012', data_dir='', path='', num_classes=0, batch_size=64,
                  shard_size=2048, store_dtype='float16', vae_dtype='float32'),
      class_conditional=True, random_flip=True, batch_size=256, sigma0=1.0, num_workers=4))


def loss_options():
  """Every loss's option block (loss.itvm, loss.lsd, loss.psd, ...) at its registry defaults, so a
  run can switch `--config.loss.name` and set any loss's options on the command line."""
  return ml_collections.ConfigDict(losses.option_defaults())


def times(diag_fraction):
  """The common loss fields: linear interpolant, uniform times over [0, 1], no label dropout, no
  learned loss weighting."""
  return dict(interpolant='linear', diag_fraction=diag_fraction, time_sampler='uniform',
              logit_mean=0.0, logit_std=1.0, time_min=0.0, time_max=1.0, label_dropout=0.0,
              weighting='none')


def teacher(config_path=''):
  """teacher.config names the config a missing teacher is trained with (on the student's data);
  teacher.workdir '' means <workdir>/teacher. A teacher checkpoint is opened with the config saved
  beside it."""
  return ml_collections.ConfigDict(dict(config=config_path, workdir='', require_existing=False,
                                        guidance=1.0))


def mesh():
  """Data parallel over every device; FSDP off (mesh.fsdp=N splits large arrays over N devices)."""
  return ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2 ** 16))


def eval_2d():
  """KL and energy distance at 1/2/4/8/16 steps against the teacher's Euler and adaptive ODE.

  500k samples (estimator floor ≈ 0.008 on the checkerboard; 1M gives ≈ 0.004 at twice the time),
  and the reference ODE at tolerance 1e-3 (37 NFE; on 200k samples its KL was 0.2000 against 0.1974
  at 1e-5, 157 NFE)."""
  return ml_collections.ConfigDict(dict(
      steps=(1, 2, 4, 8, 16), num_samples=500_000, energy_samples=20_000, batch_size=100_000,
      teacher_ode='tsit5', ode_rtol=1e-3, ode_atol=1e-3, compare_teacher=True, guidance=1.0))


def eval_images():
  """FID at 1/2/4/8/16 steps on 50k samples when the Inception weights and reference statistics
  are given as files (nothing downloads); sample grids always."""
  return ml_collections.ConfigDict(dict(
      steps=(1, 2, 4, 8, 16), batch_size=500,
      teacher_ode='tsit5', ode_rtol=1e-5, ode_atol=1e-5, compare_teacher=True,
      fid_weights='',   # path to inception_v3_weights_fid.pickle ('' = FID off)
      fid_stats='',     # reference .npz with mu, sigma (--mode fid_stats writes one)
      fid_samples=50_000, grid_size=8,
      classifier='',    # digit classifier file (tools/train_digit_classifier.py): MNIST metrics
      guidance=1.0))    # fm runs: guidance of their own Euler/ODE evaluation


def smoke_2d(c):
  """The cheap variant the tests run: a tiny MLP, a few steps, a small evaluation."""
  c.data.batch_size = 64
  c.model.mlp.width, c.model.mlp.depth = 32, 2
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.eval.num_samples = 10_000
  c.eval.energy_samples = 1000
  c.eval.batch_size = 10_000
  c.eval.steps = (1, 2)
  c.eval.ode_rtol = c.eval.ode_atol = 1e-3
  if c.teacher.config:
    c.teacher.config = c.teacher.config.partition(':')[0] + ':smoke'
  return c


def smoke_images(c):
  """Tiny networks, 2 steps, a 4-image FID pass if weights are given: a test of the plumbing."""
  c.data.batch_size = 8
  c.data.num_workers = 1
  if c.data.name in ('imagenet2012', 'celeb_a'):  # resized from any size: 16 px is plumbing enough
    c.data.image_size = 16
  # One level, one block: the middle blocks (with attention) and the decoder's skips still run;
  # down/up-sampling is covered by the networks' own tests. Compile time is what this buys.
  for unet in ('unet', 'adm'):
    if unet in c.model:
      c.model[unet].channels, c.model[unet].channel_mult, c.model[unet].num_blocks = 8, (1,), 1
      c.model[unet].attn_resolutions = ()
  c.model.dit.size, c.model.dit.patch_size = 'T', 4
  c.model.num_fourier = 4
  c.train.num_steps = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.train.plot_every = 0
  c.eval.fid_samples = 4
  c.eval.batch_size = 2
  c.eval.grid_size = 2
  c.eval.steps = (1, 2)
  c.eval.ode_rtol = c.eval.ode_atol = 1e-2
  if c.teacher.config:
    c.teacher.config = c.teacher.config.partition(':')[0] + ':smoke'
  return c


def smoke_latents(c):
  """smoke_images for a latent experiment: 16 px images and the 8×8×4 latents of the tests' tiny
  two-level VAE (tests/vae_files.py), a tiny DiT; data.vae and data.path come from the command line."""
  smoke_images(c)
  c.data.image_size = 16
  c.data.latent_shape = (8, 8, 4)
  c.data.images.batch_size = 4
  c.data.images.shard_size = 8
  c.model.dit.size, c.model.dit.patch_size = 'T', 2
  return c
