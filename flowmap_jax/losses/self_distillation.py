"""Self-distillation without a teacher (Boffi, Albergo & Vanden-Eijnden 2025, docs/losses.md §5-7).

Each loss is flow matching ‖v_θ(t, t, I_t) − İ_t‖² on the diagonal examples plus a self-consistency
term on the off-diagonal ones, whose target is the model itself under stop_gradient.
"""
import jax
import jax.numpy as jnp

from flowmap_jax import flow_map
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common

sg = common.sg

# The blocks config.loss.lsd and config.loss.psd.
LSD_OPTIONS = {
    'teacher': common.Option('online', choices=('online', 'ema')),  # T in v_T: θ or its target EMA
    'ema_rate': common.Option(0.99, lo=0.0, hi=1.0, hi_open=True),  # that EMA's rate (teacher=ema)
}
PSD_OPTIONS = {'gamma': common.Option('midpoint', choices=('midpoint', 'uniform'))}


def lsd_target_ema_rate(config):
  """LSD reads a target EMA only when its target velocity comes from it (lsd.teacher=ema)."""
  return config.lsd.ema_rate if config.lsd.teacher == 'ema' else None


def _diag_fm(apply_fn, params, d):
  return common.fm_terms(apply_fn, params, d.diag(d.t), d.diag(d.x_s), d.diag(d.dI_s), d.diag(d.y))


def lsd_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
             y=None, weighting=None):
  """LSD: ‖∂_t X_θ(s,t,x_s) − sg v_T(t, t, sg X_θ(s,t,x_s))‖², T = θ or its target EMA."""
  del teacher
  if config.lsd.teacher == 'online':
    target_params = params
  elif config.lsd.teacher == 'ema':
    target_params = params if ema_params is None else ema_params
  else:
    raise ValueError(f"Unknown loss.lsd.teacher {config.lsd.teacher!r}; known: "
                     f"{LSD_OPTIONS['teacher'].choices}.")
  d = common.draw(x0, x1, rng, config, y)
  s, t, x_s, y_o = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.y)
  X, dX = flow_map.X_and_dt(apply_fn, params, s, t, x_s, y_o)
  target = flow_map.velocity(apply_fn, sg(target_params), t, sg(X), y_o)
  return common.reduce(_diag_fm(apply_fn, params, d), common.sqnorm(dX - sg(target)),
                       (d.s, d.t), weighting)


def esd_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
             y=None, weighting=None):
  """ESD: ‖∂_s X_θ(s,t,x_s) + sg(∇_x X_θ(s,t,x_s) · v_θ(s,s,x_s))‖²; gradient through ∂_s X only."""
  del ema_params, teacher
  d = common.draw(x0, x1, rng, config, y)
  s, t, x_s, y_o = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.y)
  v_ss = sg(flow_map.velocity(apply_fn, params, s, x_s, y_o))
  _, dX_ds, dX_dx_v = flow_map.X_ds_and_dx(apply_fn, params, s, t, x_s, v_ss, y_o)
  return common.reduce(_diag_fm(apply_fn, params, d), common.sqnorm(dX_ds + sg(dX_dx_v)),
                       (d.s, d.t), weighting)


def psd_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
             y=None, weighting=None):
  """PSD: ‖v_θ(s,t,x_s) − sg((1−γ) v_θ(s,u,x_s) + γ v_θ(u, t, X_θ(s,u,x_s)))‖², u = γs + (1−γ)t.

  `psd.gamma`: `midpoint` (γ = 1/2, PSD-M) or `uniform` (γ ~ U[0,1] per example, PSD-U).
  """
  del ema_params, teacher
  k_time, k_gamma = jax.random.split(rng)
  d = common.draw(x0, x1, k_time, config, y)
  # One call for everything that receives gradient: v_θ(s, t, x_s) on the whole batch is the FM
  # prediction on the diagonal part (s = t there) and the PSD prediction on the rest.
  v = apply_fn(params, d.s, d.t, d.x_s, d.y)
  diag = common.sqnorm(d.diag(v) - d.diag(d.dI_s))
  s, t, x_s, y_o = d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.y)
  if config.psd.gamma == 'midpoint':
    gamma = jnp.full_like(s, 0.5)
  elif config.psd.gamma == 'uniform':
    gamma = jax.random.uniform(k_gamma, s.shape, s.dtype)
  else:
    raise ValueError(f"Unknown loss.psd.gamma {config.psd.gamma!r}; known: "
                     f"{PSD_OPTIONS['gamma'].choices}.")
  u = gamma * s + (1 - gamma) * t
  p = sg(params)
  v_su = apply_fn(p, s, u, x_s, y_o)
  v_ut = apply_fn(p, u, t, flow_map.X_from_v(s, u, x_s, v_su), y_o)
  target = bcast(1 - gamma, v_su) * v_su + bcast(gamma, v_ut) * v_ut
  return common.reduce(diag, common.sqnorm(d.off(v) - sg(target)), (d.s, d.t), weighting)
