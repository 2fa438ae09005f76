"""Flow map distillation of a frozen teacher velocity b_t(x) (Boffi et al. 2024, docs/losses.md §2-3).

Diagonal examples of both losses match the map's own velocity to the teacher,
‖v_θ(t, t, x_t) − b_t(x_t)‖², which is the LMD and the EMD residual at s = t.
"""
from flowmap_jax import flow_map
from flowmap_jax.losses import common

sg = common.sg


def teacher_diag_terms(apply_fn, params, teacher, t, x, y):
  """Per-example ‖v_θ(t, t, x) − b_t(x)‖²."""
  return common.sqnorm(flow_map.velocity(apply_fn, params, t, x, y) - sg(teacher(t, x, y)))


def lmd_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
             y=None, weighting=None):
  """LMD / LFMD: ‖∂_t X_θ(s,t,x_s) − b_t(sg X_θ(s,t,x_s))‖²."""
  del ema_params
  common.require_teacher('lmd', teacher)
  d = common.draw(x0, x1, rng, config, y)
  s, t, x_s, y_o = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.y)
  X, dX = flow_map.X_and_dt(apply_fn, params, s, t, x_s, y_o)
  off = common.sqnorm(dX - sg(teacher(t, sg(X), y_o)))
  diag = teacher_diag_terms(apply_fn, params, teacher, d.diag(d.t), d.diag(d.x_s), d.diag(d.y))
  return common.reduce(diag, off, (d.s, d.t), weighting)


def emd_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
             y=None, weighting=None):
  """EMD: ‖∂_s X_θ(s,t,x_s) + ∇_x X_θ(s,t,x_s) · b_s(x_s)‖², one jvp over (s, x)."""
  del ema_params
  common.require_teacher('emd', teacher)
  d = common.draw(x0, x1, rng, config, y)
  s, t, x_s, y_o = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.y)
  _, residual = flow_map.X_and_eulerian(apply_fn, params, s, t, x_s, sg(teacher(s, x_s, y_o)), y_o)
  diag = teacher_diag_terms(apply_fn, params, teacher, d.diag(d.t), d.diag(d.x_s), d.diag(d.y))
  return common.reduce(diag, common.sqnorm(residual), (d.s, d.t), weighting)
