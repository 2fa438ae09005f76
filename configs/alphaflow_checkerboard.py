"""α-Flow on the 2-D checkerboard, from scratch: configs/lsd_checkerboard.py (the same MLP, batch,
optimiser and 8000 steps) with loss.name='alphaflow' and α-Flow's B/2 recipe
(snap-research/alphaflow, infra/experiments/experiments-alphaflow.yaml,
alphaflow-sigmoid-latentspace-B-2, and src/training/loss.py), translated to our convention:

- The α curriculum: a sigmoid (γ = 25) from α = 1 (trajectory flow matching) to α = 0 (MeanFlow),
  α clamped to 0 below 0.005 and to 1 above 0.995. Theirs runs over the whole of training, steps
  0 to 400k of 400k; here over the whole 2-D budget, 0 to train.num_steps (8000; the :smoke
  variant's 4). With γ = 25 the first ~29 % of the steps are at α = 1, the last ~29 % at α = 0.
- Half of each batch diagonal (their ratio_fm 0.5), both times logit-normal, sigmoid(N(+0.4, 1))
  (their logit_norm(−0.4, 1) with noise at t = 1; their default loss config, as quoted elsewhere).
- Per-example mean squared error weighted by 1 / sg(m + 0.001) (adaptive_loss_weight_eps, as quoted
  elsewhere), the registry default.
- The finite-step target clipped to ±4 × 2.31 ≈ 9.2: their clamp_utgt 4 is for latents and noise
  of std ≈ 1; the checkerboard has std 8/√12 ≈ 2.31 per axis and so has the noise (σ0 'adaptive').
  On İ_s (the target at α = 1) ±4 would clip 23 % of the coordinates here, ±9.2 clips 0.2 %.
- No guidance: the data are unconditional.
"""
from configs import lsd_checkerboard


def alphaflow(c, clamp_target):
  """α-Flow's B/2 loss recipe on a from-scratch config `c` (the curriculum over its whole run)."""
  c.loss.name = 'alphaflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.5
  a = c.loss.alphaflow
  a.alpha_schedule, a.alpha_start, a.alpha_end, a.alpha_gamma, a.alpha_clamp = (
      'sigmoid', 1.0, 0.0, 25.0, 0.005)
  a.alpha_start_step, a.alpha_end_step = 0, c.train.num_steps
  a.clamp_target = clamp_target
  return c


def get_config(arg=None):
  return alphaflow(lsd_checkerboard.get_config(arg), clamp_target=4.0 * 2.31)
