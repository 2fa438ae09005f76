"""Shortcut models (Frans, Hafner, Levine & Abbeel 2024, arXiv 2410.12557) in our convention.

docs/losses.md §10, "Shortcut models". Their network s_θ(x_t, t, d) jumps from t by a step d; in ours
that is v_θ(s, s + d, x_s), and their d ≈ 0, the flow-matching velocity, is our diagonal
v_θ(s, s, x_s).
Derivative-free: every target is a network evaluation under stop_gradient.

  diagonal examples:   ‖v_θ(s, s, I_s) − İ_s‖²,  s on the grid {0, 1/T, …, (T − 1)/T}
  bootstrap examples:  ‖v_θ(s, s + d, I_s) − sg v̄‖²,  d = 2^{−k}, s on the grid {0, d, …, 1 − d},
    v̄ = clip(½(v₁ + v₂)),  v₁ = v_{θ⁻}(s, s + e, I_s),  x' = clip(I_s + (d/2) v₁),
    v₂ = v_{θ⁻}(s + d/2, s + d/2 + e, x'),  e = d/2 except e = 0 at the finest level d = 2/T,

i.e. one jump of d is two jumps of d/2, and the jumps of 1/T are Euler steps of the velocity.
θ⁻ is the target EMA (`shortcut.bootstrap_ema`, their default) or the online θ; clip is at
±`shortcut.clip` (0: none). With `shortcut.bootstrap_cfg` the examples at the finest bootstrap level
take both half steps with the guided velocity v(∅) + w (v(y) − v(∅)), w = `shortcut.cfg_scale`.

The official code (kvfrans/shortcut-models, targets_shortcut.py `get_targets`) is followed exactly
for the times: T = `denoise_timesteps` = 128, the batch's last 1/`bootstrap_every` (= 1 − our
`diag_fraction`, 1/8 there) is bootstrap, with the levels k a fixed pattern over those examples
(`dt_levels`) and s uniform on the grid of its d. So the loss draws its own times (`draw_times`)
and ignores `loss.time_sampler`, `time_min` and `time_max`: the bootstrap recursion only closes on
the dyadic grid (a jump of d from s is two jumps of d/2 from grid points of d/2).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from flowmap_jax import interpolants
from flowmap_jax import time_sampling
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common

sg = common.sg

_ON_OFF = (True, False)

# The block config.loss.shortcut at the official code's defaults (train.py `model_config`).
OPTIONS = {
    # T: the finest step is 1/T and the bootstrap levels are d = 1, 1/2, …, 2/T (log2 T of them).
    'denoise_timesteps': common.Option(128, choices=tuple(2 ** k for k in range(1, 13))),
    # θ⁻ for the bootstrap targets: the target EMA (their bootstrap_ema = 1) or the online θ.
    'bootstrap_ema': common.Option(True, choices=_ON_OFF),
    # Their target_update_rate: params_ema ← 0.999 params_ema + 0.001 params after every step.
    'ema_rate': common.Option(0.999, lo=0.0, hi=1.0, hi_open=True),
    # Guidance at the finest bootstrap level (their bootstrap_cfg: 0 by default, 1 on ImageNet
    # with cfg_scale 1.5 in their README); needs class labels and the null label.
    'bootstrap_cfg': common.Option(False, choices=_ON_OFF),
    'cfg_scale': common.Option(1.5, lo=0.0),
    # Their bootstrap_dt_bias: half the bootstrap examples at d = 1/2 and d = 1.
    'dt_bias': common.Option(False, choices=_ON_OFF),
    # Their ±4 on x' and on the target (unit-variance latents); 0 turns clipping off.
    'clip': common.Option(4.0, lo=0.0),
}


def target_ema_rate(config):
  """θ⁻'s rate when the bootstrap targets come from the target EMA."""
  return config.shortcut.ema_rate if config.shortcut.bootstrap_ema else None


def num_levels(c):
  """log2 T: the number of bootstrap levels d = 2^{−k}, k = 0, …, log2 T − 1."""
  return int(round(math.log2(c.denoise_timesteps)))


def dt_levels(n_off, c):
  """(k, num_cfg): the static level of each bootstrap example, finest first, and how many of the
  first examples (all at the finest level) are guided. Their `dt_base` pattern: n_off // K
  examples per level, the remainder at d = 1 (or, with dt_bias, half the examples at d = 1/2, 1)."""
  K = num_levels(c)
  if not c.dt_bias:
    k = np.repeat(K - 1 - np.arange(K), n_off // K)
    num_cfg = n_off // K
  else:
    k = np.repeat(K - 1 - np.arange(K - 2), (n_off // 2) // K)
    k = np.concatenate([k, np.ones(n_off // 4), np.zeros(n_off // 4)])
    num_cfg = (n_off // 2) // K
  k = np.concatenate([k, np.zeros(n_off - k.shape[0])]).astype(np.int32)
  return k, num_cfg


def draw_times(rng, n_diag, n_off, c, dtype=jnp.float32):
  """(s, t, k): s = t on the 1/T grid for the first n_diag examples; s on the grid of d = 2^{−k}
  (uniform over {0, d, …, 1 − d}) and t = s + d for the n_off bootstrap examples, k of dt_levels."""
  k, _ = dt_levels(n_off, c)
  k_diag, k_off = jax.random.split(rng)
  T = c.denoise_timesteps
  t_diag = jax.random.randint(k_diag, (n_diag,), 0, T).astype(dtype) / T
  sections = jnp.asarray(2 ** k, jnp.int32)
  s_off = jax.random.randint(k_off, (n_off,), 0, sections).astype(dtype) / sections.astype(dtype)
  s = jnp.concatenate([t_diag, s_off])
  t = jnp.concatenate([t_diag, s_off + 1 / sections.astype(dtype)])
  return s, t, jnp.asarray(k)


def _clip(a, c):
  return jnp.clip(a, -c.clip, c.clip) if c.clip else a


def bootstrap_target(apply_fn, target_params, s, k, x_s, y, c, null_label=None):
  """v̄ = clip(½(v₁ + v₂)), two jumps of d/2 under θ⁻ (module docstring); no gradient."""
  _, num_cfg = dt_levels(s.shape[0], c)
  h = 2.0 ** -(k.astype(s.dtype) + 1)                  # the half jump d/2
  e = jnp.where(k + 1 >= num_levels(c), 0.0, h)        # jumps of 1/T: the velocity, the diagonal
  p = sg(target_params)

  def v_of(a, x):
    """v_θ⁻(a, a + e, x), guided on the first num_cfg examples with bootstrap_cfg."""
    if not c.bootstrap_cfg:
      return apply_fn(p, a, a + e, x, y)
    n = num_cfg
    null = jnp.full((n,), null_label, y.dtype)
    v, v_null = common.apply_many(lambda *args: apply_fn(p, *args),
                                  [(a, a + e, x, y), (a[:n], (a + e)[:n], x[:n], null)])
    v_cfg = v_null + c.cfg_scale * (v[:n] - v_null)
    return jnp.concatenate([v_cfg, v[n:]])

  v1 = v_of(s, x_s)
  x_mid = _clip(x_s + bcast(h, x_s) * v1, c)
  v2 = v_of(s + h, x_mid)
  return sg(_clip((v1 + v2) / 2, c))


def shortcut_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
                  y=None, weighting=None, null_label=None):
  """`null_label`: the class index labels are dropped to; bootstrap_cfg needs it."""
  del teacher
  c = config.shortcut
  if c.bootstrap_cfg and (y is None or null_label is None):
    raise ValueError('loss.shortcut.bootstrap_cfg guides the bootstrap targets with the class '
                     'labels: that needs a class-conditional model (data.class_conditional) and '
                     'its null label.')
  target_params = params if (ema_params is None or not c.bootstrap_ema) else ema_params
  B = x0.shape[0]
  n_diag = time_sampling.num_diag(B, config.diag_fraction)
  s, t, k = draw_times(rng, n_diag, B - n_diag, c, x0.dtype)
  interp = interpolants.get(config.interpolant)
  d = common.Draw(s, t, interpolants.I(interp, s, x0, x1), interpolants.dI(interp, s, x0, x1),
                  n_diag, y)
  v_bar = bootstrap_target(apply_fn, target_params, d.off(s), k, d.off(d.x_s), d.off(y), c,
                           null_label)
  v = apply_fn(params, s, t, d.x_s, y)     # one call: both parts regress v_θ(s, t, I_s)
  return common.reduce(common.sqnorm(d.diag(v) - d.diag(d.dI_s)), common.sqnorm(d.off(v) - v_bar),
                       (s, t), weighting)
