"""Class-conditional flow-matching teacher on ImageNet 256×256 in the latent space of Stable
Diffusion's VAE: SiT-XL/2's recipe (Ma et al. 2024, willisma/SiT), which is DiT-XL/2 trained with
the linear interpolant we use. The teacher of configs/itvm_imagenet256.py (the main job).

Sources of the values:
- Data: the 32×32×4 posterior latents of sd-vae-ft-ema (data.vae, the file the user has), scaled by
  SD's 0.18215; both flips stored, one drawn per example; ADM's centre crop (as DiT and SiT prepare
  ImageNet). Latents are prepared once: `--mode prepare_latents` (docs/latents.md).
- σ0 = 1: the scaled latents have about unit variance (that is what 0.18215 was chosen for), and
  SiT's noise is N(0, I).
- Network: DiT-XL/2 (1152 wide, 28 blocks, 16 heads, patch 2: 256 tokens), no dropout; our (s, t − s)
  time embedding in place of SiT's (model.dit.time_embedding='fourier'; 'sit' is SiT's own, what
  its released weights need: docs/sit.md), bfloat16 activations.
- Loss: velocity flow matching, uniform t, labels dropped 10 % (SiT: class_dropout_prob 0.1).
- Optimiser: SiT's and DiT's AdamW at 1e-4 without weight decay, no warm-up, no gradient clipping,
  batch 256, EMA 0.9999; SiT-XL/2's published numbers are at 7M steps.
- Evaluation: guidance 1.5 in the teacher's own ODE and Euler evaluation, the scale of SiT-XL/2's
  published FID (2.06 with its SDE sampler, 2.15 with its ODE); FID in pixels after decoding, against
  ADM's VIRTUAL_imagenet256_labeled.npz when eval.fid_stats names it (docs/metrics.md).
The 512 px experiment is configs/fm_imagenet512.py (the same with 64×64×4 latents, 1024 tokens).
"""
import ml_collections

from configs import common


def experiment(resolution):
  """The full experiment at `resolution` px (256 or 512)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = common.latent_data(resolution)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'dit'
  c.model.dit = dict(size='XL', patch_size=2, dropout=0.0, time_embedding='fourier',
                     qk_norm=False)
  c.model.num_fourier, c.model.max_freq = 16, 32.0
  c.model.dtype, c.model.remat = 'bfloat16', 'none'
  c.model.attention = 'blockwise'   # docs/attention.md: memory O(N) in the jvp losses

  c.loss = ml_collections.ConfigDict(common.times(diag_fraction=1.0))
  c.loss.name = 'fm'
  c.loss.label_dropout = 0.1
  c.loss.update(common.loss_options())

  c.optim = ml_collections.ConfigDict(dict(
      name='adam', lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, clip=0.0,
      schedule='constant', warmup_steps=0, sqrt_steps=35_000))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=7_000_000, log_every=100, checkpoint_every=10_000, keep_checkpoints=3,
      eval_ema_rates=(0.9999,), init_from_teacher=False, max_bad_steps=0,
      allow_config_change=False, wandb_project='', plot_every=20_000))

  c.teacher = common.teacher()
  c.eval = common.eval_images()
  c.eval.guidance = 1.5
  c.mesh = common.mesh()
  return c


def get_config(arg=None):
  return common.with_arg(experiment(256), arg)
