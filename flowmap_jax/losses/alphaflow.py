"""α-Flow (Zhang et al. 2025, "AlphaFlow: Understanding and Improving MeanFlow Models", arXiv
2510.20771) in our convention (docs/losses.md §13).

For s < t and α in [0, 1], with s_α = s + α (t − s) and the point x_α = x_s + α (t − s) İ_s that the
conditional path reaches there (I_{s_α} for the linear interpolant), the target is

  α İ_s + (1 − α) sg v_θ(s_α, t, x_α)            for α > 0,   clipped to ±`clamp_target`,
  İ_s + (t − s) D v_θ(s, t, x_s)                  for α = 0 (MeanFlow, one jvp, §8),

i.e. (t − s) v_θ(s, t, x_s) ≈ (s_α − s) İ_s + (t − s_α) v_θ(s_α, t, x_α): a conditional step to s_α,
then the model's own jump to t. α = 1 is trajectory flow matching (v_θ(s, t, x_s) ≈ İ_s for every
t); α → 0 is MeanFlow's finite-difference limit. The diagonal examples are flow matching. Each
example's mean squared error m (over the data dimensions) enters as w m / sg(m + `adaptive_c`),
w = 1 on the diagonal and for α = 0, w = α otherwise.

α follows a curriculum over training steps (`alpha_schedule`: from `alpha_start` at
`alpha_start_step` to `alpha_end` at `alpha_end_step`; α below `alpha_clamp` is 0, above
1 − `alpha_clamp` it is 1), so the loss takes the train step (`step=`; its registry entry's
takes_step). Guidance in the target is MeanFlow's (meanflow.guided_velocity): v_g replaces İ_s
everywhere above.
"""
import jax
import jax.numpy as jnp

from flowmap_jax import flow_map
from flowmap_jax.interpolants import bcast
from flowmap_jax.losses import common
from flowmap_jax.losses import meanflow

sg = common.sg

ALPHA_SCHEDULES = ('constant', 'linear', 'sigmoid')

# The block config.loss.alphaflow, at the official values (snap-research/alphaflow,
# infra/experiments/experiments-alphaflow.yaml, alphaflow-sigmoid-latentspace-B-2;
# src/training/loss.py AlphaFlowLoss). adaptive_c and clamp_target are configs/loss/alphaflow.yaml's
# adaptive_loss_weight_eps and clamp_utgt as quoted elsewhere (that file was not in the mirror).
OPTIONS = {
    'alpha_schedule': common.Option('sigmoid', choices=ALPHA_SCHEDULES),
    'alpha_start': common.Option(1.0, lo=0.0, hi=1.0),
    'alpha_end': common.Option(0.0, lo=0.0, hi=1.0),
    'alpha_start_step': common.Option(0, lo=0),
    # B/2's 400k steps; set it to train.num_steps (the curriculum ends with training there).
    'alpha_end_step': common.Option(400_000, lo=0),
    'alpha_gamma': common.Option(25.0, lo=0.0, lo_open=True),
    'alpha_clamp': common.Option(0.005, lo=0.0, hi=0.5, hi_open=True),
    'adaptive_c': common.Option(1e-3, lo=0.0, lo_open=True),
    'clamp_target': common.Option(4.0, lo=0.0, lo_open=True),
    # Guidance in the target, as meanflow's (ω, κ, window of s); ω = 1, κ = 0 is none.
    'guidance_omega': common.Option(1.0, lo=0.0),
    'guidance_kappa': common.Option(0.0, lo=0.0, hi=1.0, hi_open=True),
    'guidance_s_min': common.Option(0.0, lo=0.0, hi=1.0),
    'guidance_s_max': common.Option(1.0, lo=0.0, hi=1.0),
}


def alpha_at(step, c, dtype=jnp.float32):
  """α at training step `step` (a traced or Python integer; None reads as step 0), the official
  get_ratio: constant, or from alpha_start to alpha_end over [alpha_start_step, alpha_end_step],
  linearly or as a sigmoid of slope alpha_gamma centred in the interval; then clamped to 0 and 1."""
  a0, a1 = c.alpha_start, c.alpha_end
  step = jnp.asarray(0 if step is None else step, dtype)
  if c.alpha_schedule not in ALPHA_SCHEDULES:
    raise ValueError(f'Unknown loss.alphaflow.alpha_schedule {c.alpha_schedule!r}; known: '
                     f'{ALPHA_SCHEDULES}.')
  if c.alpha_schedule == 'constant':
    alpha = jnp.asarray(a0, dtype)
  else:
    start, end = c.alpha_start_step, c.alpha_end_step
    span = max(end - start, 1)   # a zero-length interval is a step from a0 to a1
    if c.alpha_schedule == 'linear':
      alpha = a0 + (a1 - a0) * (step - start) / span
    else:
      alpha = a0 + (a1 - a0) * jax.nn.sigmoid(c.alpha_gamma * (step - (start + span / 2)) / span)
    alpha = jnp.where(step < start, a0, jnp.where(step > end, a1, alpha))
  lo = c.alpha_clamp
  return jnp.where(alpha < lo, 0.0, jnp.where(alpha > 1 - lo, 1.0, alpha)).astype(dtype)


def targets(apply_fn, params, s, t, x_s, v_g, y, alpha, c):
  """(v_θ(s, t, x_s), its stop-gradient target, its weight w) for the off-diagonal examples."""

  def meanflow_limit(_):   # α = 0: the jvp along (1, v_g) gives v and D v together
    v, Dv = flow_map.v_and_eulerian(apply_fn, params, s, t, x_s, v_g, y)
    return v, sg(v_g + bcast(t - s, v) * Dv), jnp.ones_like(alpha)

  def finite_step(_):
    v = apply_fn(params, s, t, x_s, y)
    h = alpha * (t - s)
    v_next = apply_fn(sg(params), s + h, t, x_s + bcast(h, x_s) * v_g, y)
    target = jnp.clip(alpha * v_g + (1 - alpha) * v_next, -c.clamp_target, c.clamp_target)
    return v, sg(target), alpha

  return branch(alpha > 0, finite_step, meanflow_limit)


def branch(pred, true_fn, false_fn, select=None):
  """lax.cond(pred, true_fn, false_fn), or, with `select` (default: on the CPU backend), both
  branches run and jnp.where picks one. XLA:CPU runs the convolutions inside a conditional's branch
  far slower than outside it: the MNIST U-Net's α-Flow train step took 99 s with lax.cond and 2.5 s
  with the select (batch 64, one core; docs/performance.md). On GPU and TPU only the taken branch
  runs. Neither branch makes a non-finite value from finite inputs, so the select's zero cotangent
  into the other branch stays zero."""
  if select is None:
    select = jax.default_backend() == 'cpu'
  if not select:
    return jax.lax.cond(pred, true_fn, false_fn, None)
  a, b = true_fn(None), false_fn(None)
  return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def adaptive(m, eps):
  """m / sg(m + eps): the official per-example weight 1 / (sg m + eps)."""
  return m / sg(m + eps)


def alphaflow_loss(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
                   y=None, weighting=None, null_label=None, step=None):
  """`step`: the train step the α curriculum reads (None: step 0). `null_label`: the class index
  labels are dropped to; guidance needs it."""
  del ema_params, teacher
  c = config.alphaflow
  d = common.draw(x0, x1, rng, config, y)
  if meanflow.guided(c):
    if y is None or null_label is None:
      raise ValueError('loss.alphaflow.guidance_omega/guidance_kappa put classifier-free guidance '
                       'into the target: that needs a class-conditional model '
                       '(data.class_conditional) and its null label.')
    d = d._replace(dI_s=meanflow.guided_velocity(apply_fn, params, d, c, null_label))
  alpha = alpha_at(step, c, x0.dtype)
  dim = x0[0].size
  v, target, w = targets(apply_fn, params, d.off(d.s), d.off(d.t), d.off(d.x_s), d.off(d.dI_s),
                         d.off(d.y), alpha, c)
  m_off = common.sqnorm(v - target) / dim
  m_diag = common.fm_terms(apply_fn, params, d.diag(d.t), d.diag(d.x_s), d.diag(d.dI_s),
                           d.diag(d.y)) / dim
  return common.reduce(adaptive(m_diag, c.adaptive_c), w * adaptive(m_off, c.adaptive_c),
                       (d.s, d.t), weighting, **{'curriculum/alpha': alpha})
