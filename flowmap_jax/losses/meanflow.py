"""MeanFlow (Geng et al. 2025) in our convention (docs/losses.md §8).

Differentiating (t − s) v(s, t, x_s) = x_t − x_s in s along the path gives
v = b_s + (t − s) D v with D = ∂_s + b_s · ∇_x. With İ_s for b_s (right in expectation):
‖v_θ(s,t,x_s) − sg(İ_s + (t − s) D v_θ(s,t,x_s))‖², one jvp returning v and D v together;
flow matching on the diagonal examples. Each example's squared error ℓ is divided by
sg((ℓ + c)^p), MeanFlow's adaptive weighting (p = `meanflow.adaptive_p`, c = `meanflow.adaptive_c`;
p = 0 is the plain squared error).
"""
from flowmap_jax import flow_map
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common

sg = common.sg

# The block config.loss.meanflow, at the official code's values (Gsunshine/meanflow: norm_p 1.0,
# norm_eps 0.01).
OPTIONS = {
    'adaptive_p': common.Option(1.0, lo=0.0),
    'adaptive_c': common.Option(0.01, lo=0.0, lo_open=True),
}


def adaptive(terms, c):
  """ℓ / sg((ℓ + c)^p) per example: every example's gradient rescaled towards unit loss."""
  return terms / sg((terms + c.adaptive_c) ** c.adaptive_p)


def meanflow_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
                  y=None):
  del ema_params, teacher
  c = config.meanflow
  d = common.draw(x0, x1, rng, config, y)
  s, t, x_s, dI_s = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.dI_s)
  v, Dv = flow_map.v_and_eulerian(apply_fn, params, s, t, x_s, dI_s, d.off(d.y))
  target = dI_s + bcast(t - s, v) * Dv
  diag = common.fm_terms(apply_fn, params, d.diag(d.t), d.diag(d.x_s), d.diag(d.dI_s),
                         d.diag(d.y))
  return common.reduce(adaptive(diag, c), adaptive(common.sqnorm(v - sg(target)), c))
