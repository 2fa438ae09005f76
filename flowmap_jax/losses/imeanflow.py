"""Improved MeanFlow (iMF, arXiv 2512.02012; official JAX code Lyy-iiis/imeanflow) in our
convention (docs/losses.md §12).

MeanFlow (§8) regresses v_θ(s,t,x_s) on İ_s + (t − s) D v, D = ∂_s + İ_s · ∇_x: the derivative is
taken along the noisy conditional velocity. iMF takes it along the model's own instantaneous
velocity b_θ = sg v_θ(s, s, x_s | y), at the exact map b_s(x_s) itself, and writes the regression as
a velocity loss, ‖v_θ + (t − s) sg(D_b v_θ) − v_g‖² in ours, of the same value and gradient as

  ℓ_u = ‖v_θ(s, t, x_s) − sg(v_g + (t − s) D_b v_θ(s, t, x_s))‖²    (the off-diagonal examples),

v_g = İ_s without guidance. Their second head, the instantaneous velocity, is trained on every
example, ℓ_v = ‖v_θ(s, s, x_s) − v_g‖²; our network has one head, whose diagonal is that velocity,
so ℓ_v is flow matching at each example's (s, x_s), and on the diagonal examples ℓ_u is ℓ_v as well.
Each ℓ enters as ℓ / sg((ℓ + c)^p) (MeanFlow's adaptive weighting, meanflow.adaptive), the two
summed.

Guidance (class-conditional data): iMF conditions its network on ω and a guidance interval and
trains v_g = İ_s + (1 − 1/ω)(v_θ(· | y, ω) − v_θ(· | ∅)) over sampled ω. Our networks take no ω,
so ω is one fixed value (`imeanflow.guidance_omega`):

  v_g = İ_s + κ sg(v_θ(s, s, x_s | y) − v_θ(s, s, x_s | ∅)),  κ = 1 − 1/ω,

for s in [guidance_s_min, guidance_s_max]; v_g = İ_s outside it and for dropped labels. Its fixed
point is ω b(· | y) + (1 − ω) b(· | ∅), the field MeanFlow's guidance with ω' = 1, κ' = κ learns;
b_θ, the tangent, is that guided field, as in iMF.
"""
import jax.numpy as jnp

from flowmap_jax import flow_map
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common
from flowmap_jax.losses import meanflow

sg = common.sg

# The block config.loss.imeanflow, at the official code's values (Lyy-iiis/imeanflow imf.py,
# configs/default.py: norm_p 1.0, norm_eps 0.01).
OPTIONS = {
    'adaptive_p': common.Option(1.0, lo=0.0),
    'adaptive_c': common.Option(0.01, lo=0.0, lo_open=True),
    # The guidance scale ω (class-conditional data only; 1 is none), the window of s where it acts.
    # iMF trains over ω in [1, 8] (log-uniform) as a network input and samples B/2 at ω = 7.5 in
    # their t in [0.4, 0.65], our s in [0.35, 0.6].
    'guidance_omega': common.Option(1.0, lo=1.0),
    'guidance_s_min': common.Option(0.0, lo=0.0, hi=1.0),
    'guidance_s_max': common.Option(1.0, lo=0.0, hi=1.0),
}


def guided(c):
  """Whether the options put guidance into the target."""
  return c.guidance_omega != 1.0


def guided_velocity(apply_fn, params, d, c, b, null_label):
  """v_g of the whole batch; `b` = sg v_θ(s, s, x_s | y), the conditional velocity (computed once).
  """
  s, x_s, y = d.s, d.x_s, d.y
  b_null = sg(apply_fn(sg(params), s, s, x_s, jnp.full_like(y, null_label)))
  window = (s >= c.guidance_s_min) & (s <= c.guidance_s_max)
  kappa = bcast(jnp.where(window, 1.0 - 1.0 / c.guidance_omega, 0.0), x_s)
  v_g = d.dI_s + kappa * (b - b_null)
  return sg(jnp.where(bcast(y == null_label, x_s), d.dI_s, v_g))


def residuals(apply_fn, params, d, c, null_label=None):
  """(r_u, r_v): r_u = v_θ(s,t,x_s) − sg(v_g + (t − s) D_b v_θ) on the off-diagonal examples and
  r_v = v_θ(s,s,x_s) − v_g on every example, b = sg v_θ(s,s,x_s) the jvp's tangent in x."""
  v_diag = apply_fn(params, d.s, d.s, d.x_s, d.y)
  b = sg(v_diag)
  v_g = guided_velocity(apply_fn, params, d, c, b, null_label) if guided(c) else d.dI_s
  s, t, x_s, v_g_off = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(v_g)
  v, Dv = flow_map.v_and_eulerian(apply_fn, params, s, t, x_s, d.off(b), d.off(d.y))
  return v - sg(v_g_off + bcast(t - s, v) * Dv), v_diag - v_g


def imeanflow_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
                   y=None, weighting=None, null_label=None):
  """`null_label`: the class index labels are dropped to (the model's num_classes); guidance
  needs it."""
  del ema_params, teacher
  c = config.imeanflow
  if guided(c) and (y is None or null_label is None):
    raise ValueError('loss.imeanflow.guidance_omega puts classifier-free guidance into the '
                     'target: that needs a class-conditional model (data.class_conditional) and '
                     'its null label.')
  d = common.draw(x0, x1, rng, config, y)
  r_u, r_v = residuals(apply_fn, params, d, c, null_label)
  l_u, l_v = common.sqnorm(r_u), common.sqnorm(r_v)
  w_v = meanflow.adaptive(l_v, c)
  diag = 2 * d.diag(w_v)      # their u-head and v-head losses at t = s: both are our diagonal
  off = meanflow.adaptive(l_u, c) + d.off(w_v)
  aux = {'loss/mean_velocity': common.mean(l_u), 'loss/velocity': common.mean(l_v)}
  return common.reduce(diag, off, (d.s, d.t), weighting, **aux)
