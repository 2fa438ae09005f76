"""MeanFlow (Geng et al. 2025) in our convention (docs/losses.md §8).

Differentiating (t − s) v(s, t, x_s) = x_t − x_s in s along the path gives
v = b_s + (t − s) D v with D = ∂_s + b_s · ∇_x. With İ_s for b_s (right in expectation):
‖v_θ(s,t,x_s) − sg(İ_s + (t − s) D v_θ(s,t,x_s))‖², one jvp returning v and D v together;
flow matching on the diagonal examples. Each example's squared error ℓ is divided by
sg((ℓ + c)^p), MeanFlow's adaptive weighting (p = `meanflow.adaptive_p`, c = `meanflow.adaptive_c`;
p = 0 is the plain squared error).

Class-conditional training with guidance in the target (MeanFlow's official recipe, docs/losses.md §8):
İ_s is replaced by v_g = ω İ_s + (1 − ω − κ) sg v_θ(s,s,x_s | ∅) + κ sg v_θ(s,s,x_s | y) for s in the
window [guidance_s_min, guidance_s_max] (outside it v_g = İ_s), and by İ_s itself for the examples whose
label was dropped to the null class. v_g is both the jvp's tangent in x and the velocity in the target.
"""
import jax.numpy as jnp

from flowmap_jax import flow_map
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common

sg = common.sg

# The block config.loss.meanflow, at the official code's values (Gsunshine/meanflow: norm_p 1.0,
# norm_eps 0.01).
OPTIONS = {
    'adaptive_p': common.Option(1.0, lo=0.0),
    'adaptive_c': common.Option(0.01, lo=0.0, lo_open=True),
    # Guidance in the target (class-conditional data only): ω, κ and the window of s where they act.
    # ω = 1, κ = 0 is no guidance. The official ImageNet values are ω = 1, κ = 0.5 over the whole
    # range (their t in [t_start, t_end] is our s in [1 − t_end, 1 − t_start]).
    'guidance_omega': common.Option(1.0, lo=0.0),
    'guidance_kappa': common.Option(0.0, lo=0.0, hi=1.0, hi_open=True),
    'guidance_s_min': common.Option(0.0, lo=0.0, hi=1.0),
    'guidance_s_max': common.Option(1.0, lo=0.0, hi=1.0),
}


def guided(c):
  """Whether the options put guidance into the target."""
  return c.guidance_omega != 1.0 or c.guidance_kappa != 0.0


def guided_velocity(apply_fn, params, d, c, null_label):
  """v_g of the whole batch (docs/losses.md §8); the conditional İ_s where no guidance acts."""
  s, x_s, y = d.s, d.x_s, d.y
  null = jnp.full_like(y, null_label)
  v_null, v_cond = common.apply_many(lambda *a: apply_fn(sg(params), *a),
                                     [(s, s, x_s, null), (s, s, x_s, y)])
  window = (s >= c.guidance_s_min) & (s <= c.guidance_s_max)
  omega = bcast(jnp.where(window, c.guidance_omega, 1.0), x_s)
  kappa = bcast(jnp.where(window, c.guidance_kappa, 0.0), x_s)
  v_g = omega * d.dI_s + (1 - omega - kappa) * v_null + kappa * v_cond
  return sg(jnp.where(bcast(y == null_label, x_s), d.dI_s, v_g))


def adaptive(terms, c):
  """ℓ / sg((ℓ + c)^p) per example: every example's gradient rescaled towards unit loss."""
  return terms / sg((terms + c.adaptive_c) ** c.adaptive_p)


def meanflow_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
                  y=None, weighting=None, null_label=None):
  """`null_label`: the class index labels are dropped to (the model's num_classes); guidance needs it."""
  del ema_params, teacher
  c = config.meanflow
  d = common.draw(x0, x1, rng, config, y)
  if guided(c):
    if y is None or null_label is None:
      raise ValueError('loss.meanflow.guidance_omega/guidance_kappa put classifier-free guidance into '
                       'the target: that needs a class-conditional model (data.class_conditional) '
                       'and its null label.')
    d = d._replace(dI_s=guided_velocity(apply_fn, params, d, c, null_label))
  s, t, x_s, dI_s = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.dI_s)
  v, Dv = flow_map.v_and_eulerian(apply_fn, params, s, t, x_s, dI_s, d.off(d.y))
  target = dI_s + bcast(t - s, v) * Dv
  diag = common.fm_terms(apply_fn, params, d.diag(d.t), d.diag(d.x_s), d.diag(d.dI_s),
                         d.diag(d.y))
  return common.reduce(adaptive(diag, c), adaptive(common.sqnorm(v - sg(target)), c), (d.s, d.t),
                       weighting)
