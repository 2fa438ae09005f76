"""Defaults shared by every experiment; experiment files only choose (ALGORITHMS.md for the values)."""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'checkerboard'
  c.data.batch_size = 2048           # global batch, over all devices and hosts
  c.data.sigma0 = 'adaptive'         # base noise std: a float, or 'adaptive' (2-D: data std per axis)
  c.data.data_dir = ''               # tfds data_dir for image sets ('' = tfds default)
  c.data.image_size = 0              # image sets: side in pixels (0 for 2-D data)
  c.data.random_flip = False         # image sets: horizontal flips
  c.data.class_conditional = False   # image sets with labels: condition the model on them
  c.data.num_workers = 4             # grain read threads per process

  c.loss = ml_collections.ConfigDict()
  c.loss.name = 'itvm'               # fm | lmd | emd | itvm | lsd | esd | psd | meanflow
  c.loss.interpolant = 'linear'      # linear | trig
  c.loss.diag_fraction = 0.75        # fraction of each batch with s = t
  c.loss.time_sampler = 'uniform'    # uniform | logit_normal
  c.loss.logit_mean = 0.0
  c.loss.logit_std = 1.0
  c.loss.time_min = 0.0
  c.loss.time_max = 1.0
  c.loss.label_dropout = 0.0         # class-conditional: labels dropped to the null class (CFG)
  c.loss.itvm = ml_collections.ConfigDict()
  c.loss.itvm.u = 't_minus_tau'      # t_minus_tau | s_plus_tau | uniform
  c.loss.itvm.tau = 0.05             # ours: τ = 0.2 and 0.02 were far worse at 1 step in 2-D
  c.loss.itvm.terminal_target = 'ema'  # ema | teacher
  c.loss.itvm.y_source = 'ema'       # ema | online
  c.loss.itvm.ema_rate = 0.99        # the target EMA θ⁻ (also lsd with lsd.teacher=ema)
  c.loss.itvm.w_init = 1.0
  c.loss.itvm.w_term = 1.0
  c.loss.psd = ml_collections.ConfigDict()
  c.loss.psd.gamma = 'midpoint'      # midpoint (PSD-M) | uniform (PSD-U)
  c.loss.lsd = ml_collections.ConfigDict()
  c.loss.lsd.teacher = 'online'      # online | ema

  c.model = ml_collections.ConfigDict()
  c.model.name = 'mlp'
  c.model.width = 512
  c.model.depth = 4
  c.model.activation = 'gelu'
  c.model.num_fourier = 8
  # Time features sin/cos(ω t), ω in [1, max_freq]·π. Low frequencies keep X smooth in (s, t), which
  # finite-difference losses need: on the checkerboard, ITVM's 1-step KL was 0.88 with max_freq 32
  # and 0.56 with 4 (the teacher's ODE KL went from 0.21 to 0.18 as well).
  c.model.max_freq = 4.0
  # Image networks (unet: DDPM++; dit: DiT-S/B/L/XL).
  c.model.channels = 128
  c.model.channel_mult = (2, 2, 2)
  c.model.num_blocks = 4
  c.model.attn_resolutions = (16,)
  c.model.dropout = 0.0
  c.model.size = 'S'
  c.model.patch_size = 2
  c.model.dtype = 'float32'          # activations: float32 | bfloat16 (parameters stay float32)
  c.model.remat = 'none'             # none | full | dots: recompute blocks in the backward (memory)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'              # adam | adamw | radam
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0         # adamw only
  c.optim.clip = 1.0                 # global-norm clipping (0 = off)
  c.optim.schedule = 'constant'      # constant | cosine | sqrt
  c.optim.warmup_steps = 0
  c.optim.sqrt_steps = 35000         # sqrt: lr · 1/sqrt(max(step / sqrt_steps, 1))

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 4000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.eval_ema_rates = (0.999,)  # EMAs for sampling and evaluation (the slowest is used)
  c.train.init_from_teacher = False  # distillation: start from the teacher's weights
  c.train.max_bad_steps = 0          # non-finite steps skipped before the run stops (0 = stop at once)
  c.train.allow_config_change = False
  c.train.plot_every = 0             # sample plots to TensorBoard every N steps (0 = at the end only)
  c.train.poison_steps = ()          # test hook: steps whose batch is replaced by NaN

  c.teacher = ml_collections.ConfigDict()
  c.teacher.config = 'configs/fm_checkerboard.py'  # path[:arg], relative to the repo or cwd
  c.teacher.workdir = ''             # '' = <workdir>/teacher
  c.teacher.require_existing = False  # True: a missing teacher checkpoint stops the run
  c.teacher.guidance = 1.0           # classifier-free guidance of a class-conditional teacher

  c.eval = ml_collections.ConfigDict()
  c.eval.steps = (1, 2, 4, 8, 16)
  c.eval.num_samples = 1_000_000     # KL histogram samples (ALGORITHMS.md §6)
  c.eval.energy_samples = 20_000
  c.eval.batch_size = 100_000
  c.eval.teacher_ode = 'tsit5'       # adaptive solver for the reference
  c.eval.ode_rtol = 1e-5
  c.eval.ode_atol = 1e-5
  c.eval.compare_teacher = True      # distillation runs: also evaluate the teacher
  # Images: FID needs Inception weights and reference statistics from files (nothing downloads).
  c.eval.fid_weights = ''            # path to inception_v3_weights_fid.pickle ('' = FID off)
  c.eval.fid_stats = ''              # reference .npz with mu, sigma (--mode fid_stats writes one)
  c.eval.fid_samples = 50_000        # fewer is reported as a proxy, not as FID
  c.eval.grid_size = 8               # images per row of the sample grids
  c.eval.guidance = 1.0              # fm image runs: guidance of their own Euler/ODE evaluation

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                   # -1: every device not used by fsdp
  c.mesh.fsdp = 1
  c.mesh.fsdp_min_size = 2 ** 16     # arrays with fewer elements stay replicated
  return c


def smoke(c):
  """The cheap variant (`file.py:smoke`) used by tests: a tiny model, a few steps, a small eval."""
  c.data.batch_size = 64
  c.model.width, c.model.depth = 32, 2
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.eval.num_samples = 10_000
  c.eval.energy_samples = 1000
  c.eval.batch_size = 10_000
  c.eval.steps = (1, 2)
  c.eval.ode_rtol = c.eval.ode_atol = 1e-3
  c.teacher.config = c.teacher.config.partition(':')[0] + ':smoke'
  return c


def finish(c, arg):
  """Applies the config-file argument: '' (the full experiment) or 'smoke'."""
  if arg in (None, ''):
    return c
  if arg == 'smoke':
    return smoke(c)
  raise ValueError(f'Unknown config argument {arg!r}; known: smoke.')


def distillation_2d(loss_name, arg):
  """A 2-D distillation experiment: from the checkerboard teacher's weights, 4000 steps of Adam at
  1e-3 with cosine decay, half of each batch diagonal. Measured for ITVM (1/2/8-step KL, 500k
  samples, teacher ODE 0.184): 0.343/0.267/0.195 as here, the run taking 8.7 min with its teacher;
  diag_fraction 0.25 gave 0.327/0.264/0.195 in 10.1 min (more off-diagonal work per step) and 5000
  steps 0.259/0.248/0.191. A constant 1e-3 for 3000 steps left 1 step at 0.56 (200k samples)."""
  c = checkerboard_2d(get_config())
  c.loss.name = loss_name
  c.loss.diag_fraction = 0.5         # the teacher's weights already know the diagonal
  c.teacher.config = 'configs/fm_checkerboard.py'
  c.train.init_from_teacher = True
  c.train.num_steps = 4000
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return finish(c, arg)


def self_distillation_2d(loss_name, arg):
  """A 2-D self-distillation experiment, from scratch: 8000 steps, cosine decay."""
  c = checkerboard_2d(get_config())
  c.loss.name = loss_name
  c.train.num_steps = 8000
  c.optim.lr = 1e-3
  c.optim.schedule = 'cosine'
  return finish(c, arg)


def checkerboard_2d(c):
  """The 2-D experiment of the papers at a laptop budget: 4×256 MLP, batch 2048."""
  c.data.name = 'checkerboard'
  c.data.batch_size = 2048
  c.model.width, c.model.depth = 256, 4
  # Evaluation at a laptop budget: 500k samples (estimator floor ≈ 0.008 instead of ≈ 0.004 at the
  # 1M of ALGORITHMS.md §6; --config.eval.num_samples=1000000 for that), and the reference ODE at
  # tolerance 1e-3 (37 NFE; on 200k samples its KL was 0.2000 against 0.1974 at 1e-5, 157 NFE).
  c.eval.num_samples = 500_000
  c.eval.ode_rtol = c.eval.ode_atol = 1e-3
  return c


# --------------------------------------------------------------------------- images

# data set -> (image size, U-Net settings, batch, class-conditional). CIFAR-10: the self-distillation
# paper's (EDM's DDPM++ CIFAR-10 network). ImageNet 64: EDM's ADM-size network (192 channels,
# multipliers 1-2-3-4, 3 blocks, attention at 32/16/8, dropout 0.1), class-conditional.
# CelebA 64: EDM's FFHQ/AFHQ 64 DDPM++ network (dropout 0.05). optim: (name, lr, schedule, warmup);
# ImageNet's Adam 1e-4 with warmup is EDM's ImageNet-64 rate scaled to our batch (not a paper's
# flow-map setting), in bfloat16 activations.
IMAGE_SETS = {
    'cifar10': dict(image_size=32, channels=128, channel_mult=(2, 2, 2), num_blocks=4,
                    attn_resolutions=(16,), dropout=0.13, batch_size=512, class_conditional=False,
                    dtype='float32', optim=('radam', 1e-2, 'sqrt', 0)),
    'imagenet2012': dict(image_size=64, channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
                         attn_resolutions=(32, 16, 8), dropout=0.1, batch_size=1024,
                         class_conditional=True, dtype='bfloat16', optim=('adam', 1e-4, 'constant', 5000)),
    'celeb_a': dict(image_size=64, channels=128, channel_mult=(1, 2, 2, 2), num_blocks=4,
                    attn_resolutions=(16,), dropout=0.05, batch_size=512, class_conditional=False,
                    dtype='float32', optim=('radam', 1e-2, 'sqrt', 0)),
}


def image_experiment(loss_name, data_name, arg, teacher=None):
  """An image experiment. Self-distillation and flow matching: the self-distillation paper's
  CIFAR-10 recipe (RAdam, lr 1e-2 · 1/sqrt(max(step/35000, 1)), clip 1, EMAs 0.999 and 0.9999,
  diag_fraction 0.75, 400k steps; ImageNet: Adam, see IMAGE_SETS). Distillation (`teacher` names the teacher's config): from the teacher's weights,
  Adam at 1e-4 for 200k steps, half of each batch diagonal (our choice, as in 2-D; not a paper's)."""
  c = get_config()
  s = IMAGE_SETS[data_name]
  c.data.name = data_name
  c.data.image_size = s['image_size']
  c.data.class_conditional = s['class_conditional']
  c.data.random_flip = True
  del c.data['sigma0']  # 'adaptive' (a str) is for 2-D data; images use the float 0.5
  c.data.sigma0 = 0.5
  c.data.batch_size = s['batch_size']
  c.model.name = 'unet'
  for k in ('channels', 'channel_mult', 'num_blocks', 'attn_resolutions', 'dropout', 'dtype'):
    c.model[k] = s[k]
  # Time features: 16 frequencies up to 32π, smoother in (s, t) than diffusion's 1000-scale
  # positional embeddings, which the jvp and ITVM's finite differences need (2-D evidence only).
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.loss.name = loss_name
  c.loss.diag_fraction = 0.75
  c.loss.label_dropout = 0.1 if s['class_conditional'] else 0.0
  c.optim.name, c.optim.lr, c.optim.schedule, c.optim.warmup_steps = s['optim']
  c.optim.sqrt_steps = 35000
  c.optim.clip = 1.0
  c.train.eval_ema_rates = (0.999, 0.9999)
  c.train.num_steps = 400_000
  c.train.log_every = 100
  c.train.checkpoint_every = 5000
  c.train.plot_every = 10_000
  c.eval.batch_size = 500
  c.eval.ode_rtol = c.eval.ode_atol = 1e-5
  if teacher is not None:
    c.teacher.config = teacher
    c.train.init_from_teacher = True
    c.loss.diag_fraction = 0.5
    c.optim.name, c.optim.lr, c.optim.schedule = 'adam', 1e-4, 'constant'
    c.train.num_steps = 200_000
  if arg == 'smoke':
    return image_smoke(c)
  return finish(c, arg)


def image_smoke(c):
  """Tiny network, 2 steps, a 2-image FID pass if weights are given: a test of the plumbing."""
  c.data.batch_size = 8
  c.data.num_workers = 1
  if c.data.name in ('imagenet2012', 'celeb_a'):  # resized from any size: 16 px is plumbing enough
    c.data.image_size = 16
  # One level, one block: the middle blocks (with attention) and the decoder's skips still run;
  # down/up-sampling is covered by the networks' own tests. Compile time is what this buys.
  c.model.channels, c.model.channel_mult, c.model.num_blocks = 8, (1,), 1
  c.model.attn_resolutions = ()
  c.model.num_fourier = 4
  c.model.size, c.model.patch_size = 'T', 4
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
