"""Improved MeanFlow (flowmap_jax/losses/imeanflow.py): the official forward on the same draws, and
the exact Gaussian flow map (docs/oracle.md)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussian_oracle as go
from flowmap_jax import losses
from flowmap_jax.losses import common
from flowmap_jax.losses import imeanflow

NUM_CLASSES, B = 3, 32
_W = jax.random.normal(jax.random.key(11), (NUM_CLASSES + 1, 2)) * 0.5


def _net(p, s, t, x, y):  # a label-dependent network, nonlinear in every argument
  return jnp.tanh(p['a'] * x + (t - s)[:, None] * p['b'] + s[:, None] ** 2 + _W[y]) * x


PARAMS = {'a': jnp.array([0.7, -1.1]), 'b': jnp.array([0.3, 0.9])}


def _official_loss(params, d, x0, x1, c):
  """Lyy-iiis/imeanflow imf.py, iMeanFlow.forward (with guidance_fn, v_fn, v_cond_fn, cond_drop,
  u_fn), commit bf60cd7cb653f6628e59d48034b333c5eba445e2, written out in their convention: noise at
  t = 1, z_t = (1 − t) x + t e, (t, r) with r ≤ t, u(z, t, r) = −v_θ(1 − t, 1 − r, z). Their draws
  (sample_tr, sample_cfg_interval, sample_cfg_scale, cond_drop's mask) are replaced by ours: the
  (t, r) of `d`, its first n_diag rows the fm rows, one fixed ω and interval, and labels already
  dropped to the null class. Their two-head network imfDiT returns (u, v); ours has one head, so
  u is v_θ(s, t) and the v head is its diagonal v_θ(s, s); ω and the interval, inputs of theirs,
  are ignored by ours."""
  null = NUM_CLASSES

  def net(x, t, h, w, t_min, t_max, y):   # imfDiT.__call__ -> (u, v)
    del w, t_min, t_max
    return -_net(params, 1 - t, 1 - t + h, x, y), -_net(params, 1 - t, 1 - t, x, y)

  omega = jnp.full((B,), c.guidance_omega)
  one, zero = jnp.ones((B,)), jnp.zeros((B,))
  fm_mask = (jnp.arange(B) < d.n_diag)[:, None]
  t, r = 1 - d.s, 1 - d.t
  x, e, labels = x1, x0, d.y
  z_t = (1 - t[:, None]) * x + t[:, None] * e
  v_t = e - x
  t_min, t_max = one - c.guidance_s_max, one - c.guidance_s_min
  # sample_cfg_interval gives the fm rows t_min = 0, t_max = 1 (no window): the interval is an
  # input of their network. A network without that input keeps one window for every row
  # (imeanflow.py), so here the fm rows keep it too: the one deviation, marked below.

  # guidance_fn
  v_c = net(z_t, t, zero, omega, zero, one, labels)[1]                         # v_fn
  v_u = net(z_t, t, zero, one, zero, one, jnp.full_like(labels, null))[1]
  v_g_fm = v_t + (1 - 1 / omega[:, None]) * (v_c - v_u)
  w = jnp.where((t >= t_min) & (t <= t_max), omega, 1.0)
  v_c = net(z_t, t, zero, w, zero, one, labels)[1]                             # v_cond_fn
  v_g = v_t + (1 - 1 / w[:, None]) * (v_c - v_u)
  # theirs: v_g = jnp.where(fm_mask, v_g_fm, v_g)   (the deviation: not applied)
  del fm_mask, v_g_fm
  # cond_drop: the dropped rows regress on v_t
  v_g = jnp.where((labels == null)[:, None], v_t, v_g)

  def u_fn(z_t, t, r):
    return net(z_t, t, t - r, omega, t_min, t_max, labels)

  u, du_dt, v = jax.jvp(u_fn, (z_t, t, r), (v_c, jnp.ones_like(t), jnp.zeros_like(t)),
                        has_aux=True)
  V = u + (t - r)[:, None] * jax.lax.stop_gradient(du_dt)
  v_g = jax.lax.stop_gradient(v_g)

  def adp_wt_fn(loss):
    adp_wt = (loss + c.adaptive_c) ** c.adaptive_p
    return loss / jax.lax.stop_gradient(adp_wt)

  loss_u = adp_wt_fn(jnp.sum((V - v_g) ** 2, axis=1))
  loss_v = adp_wt_fn(jnp.sum((v - v_g) ** 2, axis=1))
  return jnp.mean(loss_u + loss_v)


@pytest.mark.parametrize('omega,window', [(1.0, (0.0, 1.0)), (7.5, (0.35, 0.6))])
def test_imeanflow_is_the_official_forward_in_their_convention(loss_config, omega, window):
  """Loss and gradient equal the official forward on the same draws: the tangent v_θ(s, s, x_s),
  the velocity loss, the v head, the guidance of their network at one ω, dropped labels."""
  k = jax.random.split(jax.random.key(5), 3)
  x0, x1 = jax.random.normal(k[0], (B, 2)), jax.random.normal(k[1], (B, 2)) + 2.0
  y = jax.random.randint(k[2], (B,), 0, NUM_CLASSES + 1)   # some already dropped to the null class
  c = loss_config
  c.diag_fraction = 0.25
  m = c.imeanflow
  m.guidance_omega, (m.guidance_s_min, m.guidance_s_max) = omega, window
  rng = jax.random.key(7)
  d = common.draw(x0, x1, rng, c, y)
  assert 0 < int(jnp.sum(y == NUM_CLASSES)) < B

  ours = lambda p: losses.get('imeanflow')(_net, p, x0, x1, rng, config=c, y=y,
                                           null_label=NUM_CLASSES)[0]
  theirs = lambda p: _official_loss(p, d, x0, x1, m)
  np.testing.assert_allclose(float(jax.jit(ours)(PARAMS)), float(jax.jit(theirs)(PARAMS)),
                             rtol=1e-5)
  g_ours, g_theirs = jax.jit(jax.grad(ours))(PARAMS), jax.jit(jax.grad(theirs))(PARAMS)
  for key in PARAMS:
    np.testing.assert_allclose(g_ours[key], g_theirs[key], rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(g_ours['a']).sum()) > 1e-3
  if omega != 1.0:   # guidance does act: unguided, the gradient differs (the adaptive weight
    m.guidance_omega = 1.0   # keeps every loss term near 1, so compare gradients)
    g_plain = jax.jit(jax.grad(ours))(PARAMS)
    assert float(jnp.abs(g_plain['a'] - g_ours['a']).sum()) > 1e-2 * float(
        jnp.abs(g_ours['a']).sum())


def test_imeanflow_guidance_without_labels_is_a_clear_error(loss_config):
  loss_config.imeanflow.guidance_omega = 2.0
  x = jnp.zeros((8, 2))
  with pytest.raises(ValueError, match='class-conditional'):
    losses.get('imeanflow')(lambda p, s, t, x, y=None: x, {}, x, x, jax.random.key(0),
                            config=loss_config)


@pytest.mark.parametrize('case', [([1.5], 1.0, 0.5), ([0.3, -1.0, 2.0], 1.0, 0.3)])
def test_at_the_exact_map_its_meanflow_residual_is_the_flow_matching_residual(loss_config, case):
  """With the model's velocity as tangent the MeanFlow identity holds pointwise at the exact map,
  v = b + (t − s) D_b v, so the off-diagonal residual is v_θ(s,s,x_s) − İ_s exactly, example by
  example: what remains is flow matching's noise, which vanishes in expectation only."""
  c = loss_config
  c.diag_fraction = 0.25
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 512)
    d = common.draw(x0, x1, jax.random.key(1), c)

    def gap(p):   # max |r_u − r_v| over the off-diagonal examples
      r_u, r_v = imeanflow.residuals(go.average_velocity, p, d, c.imeanflow)
      return jnp.max(jnp.abs(r_u - d.off(r_v)))

    gap = jax.jit(gap)
    at_truth, perturbed = float(gap(truth)), float(gap(go.perturb(truth)))
    assert perturbed > 1e-3, perturbed
    assert at_truth < 1e-10, at_truth


@pytest.mark.parametrize('case', [([0.3, -1.0, 2.0], 1.0, 0.3)])
def test_imeanflow_has_zero_expected_gradient_at_truth(loss_config, case):
  """Every residual at the exact map is b_s(x_s) − İ_s, symmetric about zero given x_s; the
  adaptive weight depends on its size only, so the weighted gradient vanishes in expectation."""
  c = loss_config
  c.diag_fraction = 0.25
  g_truth, g_off = go.expected_gradient_norms(losses.get('imeanflow'), case, 200_000, c)
  assert g_off > 0.05, g_off
  assert g_truth < 0.1 * g_off, (g_truth, g_off)
