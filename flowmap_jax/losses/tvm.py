"""Terminal Velocity Matching (Zhou, Parger, Haque & Song 2025, arXiv 2511.19797) in our convention.

docs/losses.md §11, "TVM". TVM differentiates the map in its terminal time and matches that terminal
velocity to the target EMA's instantaneous velocity at the terminal point; flow matching at an
independent time r trains that velocity. Every example of the batch has both terms:

  terminal:  β² ‖∂_t X_θ(s, t, I_s | y) − sg v_{θ⁻}(t, t, sg X_θ(s, t, I_s | y) | y)‖²
  flow:      β² ‖v_θ(r, r, I_r | y) − sg(ω İ_r + (1 − ω) v_{θ⁻}(r, r, I_r | ∅))‖²

with the gradient through the jvp ∂_t X_θ (their detach_jvp = False) and none through the terminal
point X_θ (their teacher call is under no_grad), θ⁻ the target EMA at rate `tvm.ema_rate` (their
ema_target_beta). Guidance ω = `tvm.cfg` on conditional examples, ω = 1 on those whose label was
dropped to ∅ (loss.label_dropout), and β = 1/ω (their beta_scale). The terminal term is the LSD
residual (§5) with an EMA teacher; TVM's own parts are its times, the guided flow-matching target
and the β² scale. The terminal term is dropped where s = t to float precision, as theirs is.

Times (their `TVMLoss.sample_ts`, noise at 1 there, so our t is 1 − their s): the gap
t − s ~ sigmoid(N(gap_mean, gap_std²)); t ~ sigmoid(N(time_mean, time_std²)) truncated to t ≥ gap
(inverse-cdf sampling), s = t − gap; r ~ sigmoid(N(time_mean, time_std²)) independently. Their
s_P_mean = −0.4 is our time_mean = +0.4. The loss draws its own times and ignores diag_fraction and
the common time sampler fields: TVM has no split, every example has a pair (s, t) and a time r.

`aux`: `loss/diag` is the flow term's mean, `loss/offdiag` the terminal term's. The total is the
mean over the 2B terms, ½ (flow + terminal) per example: TVM's per-example sum halved (and their mean
over dimensions is our sum), a constant factor.
"""
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jax.scipy.stats import norm

from flowmap_jax import flow_map
from flowmap_jax import interpolants
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common

sg = common.sg

# The block config.loss.tvm at the official ImageNet configs' values (lumalabs/tvm configs/*.yaml:
# s_P_mean −0.4, s_P_std 1, gap_P_mean −0.8, gap_P_std 1, ema_target_beta 0.99).
OPTIONS = {
    'gap_mean': common.Option(-0.8),
    'gap_std': common.Option(1.0, lo=0.0, lo_open=True),
    'time_mean': common.Option(0.4),
    'time_std': common.Option(1.0, lo=0.0, lo_open=True),
    # ω: 1 is no guidance (unconditional data); their ImageNet runs use 2.0 (256, 1 step),
    # 1.75 (256, 4 steps), 2.5 and 2.25 (512).
    'cfg': common.Option(1.0, lo=0.0, lo_open=True),
    'ema_rate': common.Option(0.99, lo=0.0, hi=1.0, hi_open=True),
}


def target_ema_rate(config):
  """θ⁻'s rate: TVM always reads its target EMA."""
  return config.tvm.ema_rate


def draw_noise(rng, batch_size):
  """The standard draws TVM's times are made from: (z_gap, u, z_r), normal, uniform, normal."""
  k_gap, k_u, k_r = jax.random.split(rng, 3)
  return (jax.random.normal(k_gap, (batch_size,)), jax.random.uniform(k_u, (batch_size,)),
          jax.random.normal(k_r, (batch_size,)))


def times(z_gap, u, z_r, c):
  """(s, t, r) from the standard draws (module docstring). t's truncation to t ≥ gap is read from
  the upper tail, t = sigmoid(m − σ Φ⁻¹(u P(T ≥ gap))), accurate where that tail is thin. The
  draws enter with TVM's signs (our time is one minus theirs; z and −z are equally normal), so the
  same numbers give their times."""
  logit_gap = c.gap_mean + c.gap_std * z_gap
  gap = jax.nn.sigmoid(logit_gap)
  upper = norm.cdf((c.time_mean - logit_gap) / c.time_std)   # P(logit T ≥ logit gap)
  t = jax.nn.sigmoid(c.time_mean - c.time_std * ndtri(u * upper))
  s = jnp.maximum(t - gap, 0.0)
  r = jax.nn.sigmoid(c.time_mean - c.time_std * z_r)
  return s, t, r


def tvm_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None, y=None,
             weighting=None, null_label=None):
  """`null_label`: the class index labels are dropped to; guidance (tvm.cfg ≠ 1) needs it."""
  del teacher
  c = config.tvm
  guided = c.cfg != 1.0
  if guided and (y is None or null_label is None):
    raise ValueError('loss.tvm.cfg puts classifier-free guidance into the target: that needs a '
                     'class-conditional model (data.class_conditional) and its null label.')
  target_params = sg(params if ema_params is None else ema_params)
  interp = interpolants.get(config.interpolant)
  s, t, r = times(*draw_noise(rng, x0.shape[0]), c)
  s, t, r = (a.astype(x0.dtype) for a in (s, t, r))
  x_s, x_r = interpolants.I(interp, s, x0, x1), interpolants.I(interp, r, x0, x1)
  dI_r = interpolants.dI(interp, r, x0, x1)

  X, dX = flow_map.X_and_dt(apply_fn, params, s, t, x_s, y)
  pieces = [(t, t, sg(X), y)]
  if guided:
    pieces.append((r, r, x_r, jnp.full_like(y, null_label)))
  v_target = common.apply_many(lambda *a: apply_fn(target_params, *a), pieces)
  if guided:
    omega = jnp.where(y == null_label, 1.0, c.cfg).astype(x0.dtype)
    fm_target = bcast(omega, x_r) * dI_r + bcast(1 - omega, x_r) * v_target[1]
  else:
    omega = jnp.ones_like(r)
    fm_target = dI_r
  beta2 = omega ** -2
  v_r = flow_map.velocity(apply_fn, params, r, x_r, y)
  terminal = beta2 * common.sqnorm(dX - sg(v_target[0])) * (~jnp.isclose(s, t))
  flow = beta2 * common.sqnorm(v_r - sg(fm_target))
  return common.reduce(flow, terminal, (jnp.concatenate([r, s]), jnp.concatenate([r, t])),
                       weighting)
