"""Terminal Velocity Matching (flowmap_jax/losses/tvm.py): parity with the official PyTorch forward,
written out in JAX in their convention on the same draws, and the exact Gaussian flow map as its
fixed point (docs/oracle.md)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtri
from jax.scipy.stats import norm

import gaussian_oracle as go
from flowmap_jax import losses
from flowmap_jax.losses import tvm

sg = jax.lax.stop_gradient


# ---- lumalabs/tvm at commit 82e8e5dfae94cdd229cd0a387a62f1d42c65ac4f, written out in JAX in their
# convention (t = 1 noise, y_t = (1 − t) images + t noise, s < t the terminal time, the network
# F(x, t, t − s, labels, guidance_scale), f_ts = x + (s − t) F): training/loss.py
# `TVMLoss.sample_ts` and `__call__`, training/wrapper.py `TVMWrapper.get_dfds`, `forward_model` and
# `forward`, and the training loop's loss.mean(). Changes: the torch random draws are arguments
# (torch.randn / rand / randn_like of sample_ts, randn_like noise) and the label dropout is given
# as labels already dropped to the null class with its mask (their one-hot zero vector); bf16
# autocast is float32; torch.no_grad is stop_gradient; `model(params)` is the network.
def their_sample_ts(randn_len, rand_cdf, randn_prime, s_P_mean, s_P_std, gap_P_mean, gap_P_std):
  log_len = randn_len * gap_P_std + gap_P_mean
  len_ = jax.nn.sigmoid(log_len)
  maxs = 1 - len_
  max_logns = jnp.log(maxs / (1 - maxs))
  cdf_fn = lambda a: norm.cdf(a, loc=s_P_mean, scale=s_P_std)
  cdf = rand_cdf * (cdf_fn(max_logns) - cdf_fn(-jnp.inf)) + cdf_fn(-jnp.inf)
  log_ns = s_P_mean + s_P_std * ndtri(cdf)   # dist.icdf(cdf)
  s = jax.nn.sigmoid(log_ns)
  t = jnp.minimum(s + len_, 1)
  log_ns_prime = randn_prime * s_P_std + s_P_mean
  s_prime = jax.nn.sigmoid(log_ns_prime)
  return t, s, s_prime


def their_loss(model, params, teacher_params, images, noise, labels, dropped, draws, cfg,
               do_scale_param, P):
  r4 = lambda a: a.reshape(-1, 1, 1, 1)
  t, s, s_prime = (r4(a) for a in their_sample_ts(*draws, **P))
  beta_scale = jnp.ones_like(t) / cfg
  yt = (1 - t) * images + t * noise
  ys_prime = (1 - s_prime) * images + s_prime * noise
  beta_scale = jnp.where(r4(dropped), 1.0, beta_scale)      # beta_scale[uncond_sel] = 1.0
  v_target = noise - images
  null = None if labels is None else jnp.full_like(labels, NUM_CLASSES)  # torch.zeros_like

  # get_dfds
  def model_wrapper(x_, t_, s_):
    return model(params)(x_, t_, (t_ - s_), labels, beta_scale.flatten())
  F_ts, F_ts_grad = jax.jvp(model_wrapper, (yt, t.flatten(), s.flatten()),
                            (jnp.zeros_like(yt), jnp.zeros_like(s).flatten(),
                             jnp.ones_like(s).flatten()))
  out_scale = 1.0
  if do_scale_param:
    w_scale = 1 / beta_scale
    out_scale = w_scale
  f_ts = yt + (s - t) * F_ts * out_scale
  df_ds = out_scale * (F_ts + (s - t) * F_ts_grad)

  # forward
  teacher = lambda *a: sg(model(teacher_params)(*a))
  F_ss_from_fts, F_ss_uncond = jnp.split(teacher(
      jnp.concatenate([sg(f_ts), ys_prime]), jnp.concatenate([s, s_prime]).flatten(),
      jnp.zeros(2 * s.shape[0]), jnp.concatenate([labels, null]) if labels is not None else None,
      jnp.concatenate([beta_scale, jnp.ones_like(beta_scale)]).flatten()), 2)
  F_ss = model(params)(ys_prime, s_prime.flatten(), jnp.zeros(s.shape[0]), labels,
                       beta_scale.flatten())
  w_scale = 1 / beta_scale
  if do_scale_param:
    F_ss_from_fts = w_scale * F_ss_from_fts
    F_ss = w_scale * F_ss
  terminal_loss = (((df_ds - F_ss_from_fts) * beta_scale) ** 2).reshape(t.shape[0], -1).mean(-1)
  v_target = w_scale * v_target + (1 - w_scale) * F_ss_uncond
  fm_loss = (((F_ss - v_target) * beta_scale) ** 2).reshape(t.shape[0], -1).mean(-1)
  terminal_loss = jnp.where(jnp.isclose(s, t).flatten(), 0 * terminal_loss, terminal_loss)
  loss = terminal_loss + fm_loss
  return loss.mean(), (terminal_loss, fm_loss)
# ---- end of the official code.


NUM_CLASSES = 3
W = jnp.array([0.3, -0.5, 0.8, 0.1])        # per-label offsets, the last one the null class


def net(p, s, t, x, y=None):
  """A label-dependent network, nonlinear in every argument (x of shape (B, 2, 2, 1))."""
  b = lambda a: a[:, None, None, None]
  lab = 0.0 if y is None else b(W[y])
  return jnp.tanh(p['a'] * x + b(t - s) * p['b'] + b(s) ** 2 + lab) * (x + p['c'])


def as_theirs(do_scale_param):
  """Their F(x, t, t − s, labels, β) as our v: F = −v(1 − t, 1 − s, x). With do_scale_param their
  output is multiplied by 1/β, so their raw network is −β v: the same effective velocity."""
  def model(params):
    def F(x, t, gap, labels, beta):
      scale = beta[:, None, None, None] if do_scale_param else 1.0
      return -scale * net(params, 1 - t, 1 - t + gap, x, labels)
    return F
  return model


def _params(k, scale=1.0):
  return {'a': scale * jax.random.normal(k, (2, 2, 1)), 'b': jnp.array(0.7 * scale),
          'c': jnp.array(0.2)}


@pytest.mark.parametrize('cfg,conditional,do_scale_param', [
    (2.0, True, True), (2.0, True, False), (1.0, False, False)])
def test_tvm_is_the_official_loss_and_gradient(loss_config, cfg, conditional, do_scale_param):
  B = 48
  c = loss_config
  c.tvm.cfg = cfg
  k = jax.random.split(jax.random.key(0), 5)
  params, ema = _params(k[0]), _params(k[1], 1.3)
  x0 = jax.random.normal(k[2], (B, 2, 2, 1))
  x1 = 2.0 * jax.random.normal(k[3], (B, 2, 2, 1)) + 0.5
  y = jax.random.randint(k[4], (B,), 0, NUM_CLASSES + 1) if conditional else None
  rng = jax.random.key(7)
  ours = lambda p: losses.get('tvm')(net, p, x0, x1, rng, config=c, ema_params=ema, y=y,
                                     null_label=NUM_CLASSES if conditional else None)
  (loss, aux), grads = jax.value_and_grad(ours, has_aux=True)(params)

  P = dict(s_P_mean=-c.tvm.time_mean, s_P_std=c.tvm.time_std, gap_P_mean=c.tvm.gap_mean,
           gap_P_std=c.tvm.gap_std)                     # their s_P_mean = −0.4 is our +0.4
  draws = tvm.draw_noise(rng, B)                        # the loss's own random numbers
  labels = y                                            # None: their label_dim = 0
  dropped = (y == NUM_CLASSES) if conditional else jnp.zeros((B,), bool)
  theirs = lambda p: their_loss(as_theirs(do_scale_param), p, ema, x1, x0, labels, dropped,
                                draws, cfg, do_scale_param, P)
  (loss_t, (term_t, fm_t)), grads_t = jax.value_and_grad(theirs, has_aux=True)(params)

  # Same times: ours (s, t, r) = their (1 − t, 1 − s, 1 − s').
  t_th, s_th, sp_th = their_sample_ts(*draws, **P)
  s, t, r = tvm.times(*draws, c.tvm)
  np.testing.assert_allclose(s, 1 - t_th, atol=2e-6)
  np.testing.assert_allclose(t, 1 - s_th, atol=2e-6)
  np.testing.assert_allclose(r, 1 - sp_th, atol=2e-6)
  D = 4   # they average over the dimensions, we sum; our total is the mean of 2B terms
  np.testing.assert_allclose(float(loss), D / 2 * float(loss_t), rtol=2e-5)
  np.testing.assert_allclose(float(aux['loss/offdiag']), D * float(jnp.mean(term_t)), rtol=2e-5)
  np.testing.assert_allclose(float(aux['loss/diag']), D * float(jnp.mean(fm_t)), rtol=2e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_t)):
    np.testing.assert_allclose(a, D / 2 * b, rtol=5e-5, atol=1e-6)
  if conditional:   # and guidance does act
    c.tvm.cfg = 1.0
    plain = losses.get('tvm')(net, params, x0, x1, rng, config=c, ema_params=ema, y=y,
                              null_label=NUM_CLASSES)[0]
    assert abs(float(plain) - float(loss)) > 1e-3


def test_times_follow_their_distributions(loss_config):
  """t − s ~ sigmoid(N(−0.8, 1)) where t did not clip, r ~ sigmoid(N(0.4, 1)), 0 ≤ s < t ≤ 1."""
  c = loss_config.tvm
  s, t, r = tvm.times(*tvm.draw_noise(jax.random.key(0), 100_000), c)
  assert float(jnp.min(s)) >= 0 and float(jnp.max(t)) <= 1 and bool(jnp.all(s <= t))
  logit = lambda a: jnp.log(a / (1 - a))
  z = logit(r)
  assert abs(float(jnp.mean(z)) - 0.4) < 0.02 and abs(float(jnp.std(z)) - 1.0) < 0.02
  g = logit(t - s)
  assert abs(float(jnp.mean(g)) + 0.8) < 0.02 and abs(float(jnp.std(g)) - 1.0) < 0.02
  # t given the gap is the time law truncated to t ≥ gap: its logit's mean exceeds 0.4.
  assert float(jnp.mean(logit(t))) > 0.4


def test_guidance_without_labels_is_a_clear_error(loss_config):
  loss_config.tvm.cfg = 2.0
  x = jnp.zeros((8, 2, 2, 1))
  with pytest.raises(ValueError, match='class-conditional'):
    losses.get('tvm')(net, _params(jax.random.key(0)), x, x, jax.random.key(0),
                      config=loss_config)


# ---- The exact Gaussian flow map.

CASES = [([1.5], 1.0, 0.5), ([-0.7], 0.5, 2.0), ([0.3, -1.0, 2.0], 1.0, 0.3)]


@pytest.mark.parametrize('case', CASES)
def test_terminal_residual_vanishes_at_the_exact_map(loss_config, case):
  """∂_t X(s, t, x) = b_t(X(s, t, x)) holds for the exact map (the Lagrangian equation), so the
  terminal term vanishes there with θ⁻ = θ, and not at a perturbed map."""
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 512)
    run = lambda p: losses.get('tvm')(go.average_velocity, p, x0, x1, jax.random.key(1),
                                      config=loss_config)[1]['loss/offdiag']
    at_truth, perturbed = float(run(truth)), float(run(go.perturb(truth)))
    assert perturbed > 1e-4, perturbed
    assert at_truth < 1e-6 * perturbed, (at_truth, perturbed)


@pytest.mark.parametrize('case', [CASES[2]])
def test_zero_expected_gradient_at_truth(loss_config, case):
  """The flow term regresses on the noisy İ_r: the whole loss's gradient vanishes in expectation
  at the exact map (the terminal term's exactly), so the exact map is TVM's fixed point."""
  g_truth, g_off = go.expected_gradient_norms(losses.get('tvm'), case, 200_000, loss_config)
  assert g_off > 0.05, g_off
  assert g_truth < 0.1 * g_off, (g_truth, g_off)
