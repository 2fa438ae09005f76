"""FM: flow matching, ‖v_θ(t, t, I_t) − İ_t‖² (docs/losses.md §1). Trains a teacher.

Every example is diagonal, whatever `diag_fraction` says: a velocity field has no second time.
"""
from flowmap_jax import interpolants
from flowmap_jax import time_sampling
from flowmap_jax.losses import common


def fm_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
            y=None, weighting=None):
  del ema_params, teacher
  interp = interpolants.get(config.interpolant)
  t = time_sampling.sample_t(rng, x0.shape[0], config)  # loss.time_sampler, as every loss
  terms = common.fm_terms(apply_fn, params, t, interpolants.I(interp, t, x0, x1),
                          interpolants.dI(interp, t, x0, x1), y)
  return common.reduce(terms, terms[:0], (t, t), weighting)
