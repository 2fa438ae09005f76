"""Shortcut models (flowmap_jax/losses/shortcut.py): parity with the official JAX targets on the
same draws, and what its fixed point is at the exact Gaussian flow map (docs/oracle.md)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussian_oracle as go
from flowmap_jax import losses
from flowmap_jax.losses import shortcut


# ---- kvfrans/shortcut-models, targets_shortcut.py `get_targets` and train.py `loss_fn`, at commit
# 601004348667094e1b71f30942199759412d4432, written out in their convention (t = 0 noise,
# x_t = (1 − (1 − 1e-5) t) x_0 + t x_1, the network called on (x_t, t, dt_base, labels)).
# Changes, each forced by feeding both sides the same draws: the random draws (their randint /
# normal / bernoulli of `time_key`, `noise_key`, `label_key`) are arguments; the bootstrap part gets
# its own images and labels `images_bst`, `labels_bst` (theirs takes the first bootstrap_batchsize
# of the batch, which their flow part reuses); their σ_min 1e-5 is the argument `eps` (our linear
# interpolant is eps = 0); the force_t / force_dt overrides (-1 in training) are dropped.
def their_get_targets(FLAGS, call_model_fn, images, labels, images_bst, labels_bst, x_0_bst,
                      t_bst_int, x_0_fm, t_fm_int, labels_dropout, eps=1e-5):
  info = {}

  # 1) =========== Sample dt. ============
  bootstrap_batchsize = FLAGS['batch_size'] // FLAGS['model']['bootstrap_every']
  log2_sections = np.log2(FLAGS['model']['denoise_timesteps']).astype(np.int32)
  if FLAGS['model']['bootstrap_dt_bias'] == 0:
    dt_base = jnp.repeat(log2_sections - 1 - jnp.arange(log2_sections),
                         bootstrap_batchsize // log2_sections)
    dt_base = jnp.concatenate([dt_base, jnp.zeros(bootstrap_batchsize - dt_base.shape[0],)])
    num_dt_cfg = bootstrap_batchsize // log2_sections
  else:
    dt_base = jnp.repeat(log2_sections - 1 - jnp.arange(log2_sections - 2),
                         (bootstrap_batchsize // 2) // log2_sections)
    dt_base = jnp.concatenate([dt_base, jnp.ones(bootstrap_batchsize // 4),
                               jnp.zeros(bootstrap_batchsize // 4)])
    dt_base = jnp.concatenate([dt_base, jnp.zeros(bootstrap_batchsize - dt_base.shape[0],)])
    num_dt_cfg = (bootstrap_batchsize // 2) // log2_sections
  dt = 1 / (2 ** (dt_base))
  dt_base_bootstrap = dt_base + 1
  dt_bootstrap = dt / 2

  # 2) =========== Sample t. ============
  dt_sections = jnp.power(2, dt_base)
  t = t_bst_int.astype(jnp.float32)          # jax.random.randint(time_key, ..., maxval=dt_sections)
  t = t / dt_sections
  t_full = t[:, None, None, None]

  # 3) =========== Generate Bootstrap Targets ============
  x_1 = images_bst
  x_0 = x_0_bst                              # jax.random.normal(noise_key, x_1.shape)
  x_t = (1 - (1 - eps) * t_full) * x_0 + t_full * x_1
  bst_labels = labels_bst                    # labels[:bootstrap_batchsize]
  if not FLAGS['model']['bootstrap_cfg']:
    v_b1 = call_model_fn(x_t, t, dt_base_bootstrap, bst_labels, train=False)
    t2 = t + dt_bootstrap
    x_t2 = x_t + dt_bootstrap[:, None, None, None] * v_b1
    x_t2 = jnp.clip(x_t2, -4, 4)
    v_b2 = call_model_fn(x_t2, t2, dt_base_bootstrap, bst_labels, train=False)
    v_target = (v_b1 + v_b2) / 2
  else:
    x_t_extra = jnp.concatenate([x_t, x_t[:num_dt_cfg]], axis=0)
    t_extra = jnp.concatenate([t, t[:num_dt_cfg]], axis=0)
    dt_base_extra = jnp.concatenate([dt_base_bootstrap, dt_base_bootstrap[:num_dt_cfg]], axis=0)
    labels_extra = jnp.concatenate(
        [bst_labels, jnp.ones(num_dt_cfg, dtype=jnp.int32) * FLAGS['model']['num_classes']], axis=0)
    v_b1_raw = call_model_fn(x_t_extra, t_extra, dt_base_extra, labels_extra, train=False)
    v_b_cond = v_b1_raw[:x_1.shape[0]]
    v_b_uncond = v_b1_raw[x_1.shape[0]:]
    v_cfg = v_b_uncond + FLAGS['model']['cfg_scale'] * (v_b_cond[:num_dt_cfg] - v_b_uncond)
    v_b1 = jnp.concatenate([v_cfg, v_b_cond[num_dt_cfg:]], axis=0)

    t2 = t + dt_bootstrap
    x_t2 = x_t + dt_bootstrap[:, None, None, None] * v_b1
    x_t2 = jnp.clip(x_t2, -4, 4)
    x_t2_extra = jnp.concatenate([x_t2, x_t2[:num_dt_cfg]], axis=0)
    t2_extra = jnp.concatenate([t2, t2[:num_dt_cfg]], axis=0)
    v_b2_raw = call_model_fn(x_t2_extra, t2_extra, dt_base_extra, labels_extra, train=False)
    v_b2_cond = v_b2_raw[:x_1.shape[0]]
    v_b2_uncond = v_b2_raw[x_1.shape[0]:]
    v_b2_cfg = v_b2_uncond + FLAGS['model']['cfg_scale'] * (v_b2_cond[:num_dt_cfg] - v_b2_uncond)
    v_b2 = jnp.concatenate([v_b2_cfg, v_b2_cond[num_dt_cfg:]], axis=0)
    v_target = (v_b1 + v_b2) / 2

  v_target = jnp.clip(v_target, -4, 4)
  bst_v = v_target
  bst_dt = dt_base
  bst_t = t
  bst_xt = x_t
  bst_l = bst_labels

  # 4) =========== Generate Flow-Matching Targets ============
  labels_dropped = jnp.where(labels_dropout, FLAGS['model']['num_classes'], labels)
  t = t_fm_int.astype(jnp.float32)           # jax.random.randint(time_key, ..., denoise_timesteps)
  t /= FLAGS['model']['denoise_timesteps']
  t_full = t[:, None, None, None]
  x_0 = x_0_fm                               # jax.random.normal(noise_key, images.shape)
  x_1 = images
  x_t = (1 - (1 - eps) * t_full) * x_0 + t_full * x_1
  v_t = x_1 - (1 - eps) * x_0
  dt_flow = np.log2(FLAGS['model']['denoise_timesteps']).astype(jnp.int32)
  dt_base = jnp.ones(images.shape[0], dtype=jnp.int32) * dt_flow

  # ==== 5) Merge Flow+Bootstrap ====
  bst_size = FLAGS['batch_size'] // FLAGS['model']['bootstrap_every']
  bst_size_data = FLAGS['batch_size'] - bst_size
  x_t = jnp.concatenate([bst_xt, x_t[:bst_size_data]], axis=0)
  t = jnp.concatenate([bst_t, t[:bst_size_data]], axis=0)
  dt_base = jnp.concatenate([bst_dt, dt_base[:bst_size_data]], axis=0)
  v_t = jnp.concatenate([bst_v, v_t[:bst_size_data]], axis=0)
  labels_dropped = jnp.concatenate([bst_l, labels_dropped[:bst_size_data]], axis=0)
  return x_t, v_t, t, dt_base, labels_dropped, info


def their_loss(call_model, grad_params, x_t, v_t, t, dt_base, labels):
  """train.py `update.loss_fn`: the plain mean squared error on the merged batch."""
  v_prime = call_model(x_t, t, dt_base, labels, params=grad_params)
  mse_v = jnp.mean((v_prime - v_t) ** 2, axis=(1, 2, 3))
  return jnp.mean(mse_v)
# ---- end of the official code.


NUM_CLASSES = 3
W = jnp.array([0.3, -0.5, 0.8, 0.1])        # per-label offsets, the last one the null class


def net(p, s, t, x, y):
  """A label-dependent network, nonlinear in every argument (x of shape (B, 2, 2, 1))."""
  b = lambda a: a[:, None, None, None]
  lab = 0.0 if y is None else b(W[y])
  return jnp.tanh(p['a'] * x + b(t - s) * p['b'] + b(s) ** 2 + lab) * (x + p['c'])


def as_theirs(params, K):
  """Their network (x_t, t, dt_base, labels) as ours: d = 2^{-dt_base}, and their d of the flow
  examples (dt_base = log2 T) is our diagonal."""
  def call(x, t, dt_base, labels, train=False, params=params):
    del train
    d = jnp.where(dt_base >= K, 0.0, 2.0 ** -jnp.asarray(dt_base, jnp.float32))
    return net(params, t, t + d, x, labels)
  return call


def _params(k, scale=1.0):
  return {'a': scale * jax.random.normal(k, (2, 2, 1)), 'b': jnp.array(0.7 * scale),
          'c': jnp.array(0.2)}


@pytest.mark.parametrize('bootstrap_cfg,dt_bias,bootstrap_ema', [
    (False, False, True), (True, False, True), (True, True, True), (False, False, False)])
def test_shortcut_is_the_official_target_and_gradient(loss_config, bootstrap_cfg, dt_bias,
                                                      bootstrap_ema):
  B, T = 64, 8
  K = int(np.log2(T))
  c = loss_config
  c.diag_fraction = 7 / 8                    # bootstrap_every = 8
  sc = c.shortcut
  sc.denoise_timesteps, sc.bootstrap_cfg, sc.dt_bias, sc.cfg_scale = T, bootstrap_cfg, dt_bias, 1.5
  sc.bootstrap_ema, sc.clip = bootstrap_ema, 4.0
  k = jax.random.split(jax.random.key(0), 5)
  params, ema = _params(k[0]), _params(k[1], 1.3)
  x0 = jax.random.normal(k[2], (B, 2, 2, 1))
  x1 = 2.5 * jax.random.normal(k[3], (B, 2, 2, 1))   # wide enough that ±4 clips some
  y = jax.random.randint(k[4], (B,), 0, NUM_CLASSES + 1)  # some already dropped to the null class
  rng = jax.random.key(7)
  ours = lambda p: losses.get('shortcut')(net, p, x0, x1, rng, config=c, ema_params=ema, y=y,
                                          null_label=NUM_CLASSES)[0]
  loss, grads = jax.value_and_grad(ours)(params)

  n_diag = B - B // 8
  s, t, lev = shortcut.draw_times(rng, n_diag, B - n_diag, sc)  # the loss's draws
  t_fm_int = jnp.round(jnp.concatenate([s[:n_diag], jnp.zeros(B - n_diag)]) * T).astype(jnp.int32)
  t_bst_int = jnp.round(s[n_diag:] * 2.0 ** lev).astype(jnp.int32)
  FLAGS = {'batch_size': B, 'model': {
      'bootstrap_every': 8, 'denoise_timesteps': T, 'bootstrap_dt_bias': int(dt_bias),
      'bootstrap_cfg': int(bootstrap_cfg), 'bootstrap_ema': int(bootstrap_ema), 'cfg_scale': 1.5,
      'num_classes': NUM_CLASSES, 'class_dropout_prob': 0.1}}
  call_model_fn = as_theirs(ema if bootstrap_ema else params, K)
  targets = their_get_targets(
      FLAGS, call_model_fn, x1, y, x1[n_diag:], y[n_diag:], x0[n_diag:], t_bst_int, x0, t_fm_int,
      jnp.zeros(B, bool), eps=0.0)
  x_t, v_t, t_their, dt_base, labels_their, _ = targets
  np.testing.assert_array_equal(labels_their, jnp.concatenate([y[n_diag:], y[:n_diag]]))
  theirs = lambda p: their_loss(as_theirs(p, K), p, x_t, v_t, t_their, dt_base, labels_their)
  loss_t, grads_t = jax.value_and_grad(theirs)(params)

  # Same times: their dt levels and grid times are ours.
  np.testing.assert_array_equal(np.asarray(dt_base[:B - n_diag]), np.asarray(lev))
  np.testing.assert_allclose(t_their, jnp.concatenate([s[n_diag:], s[:n_diag]]), atol=0)
  D = 4   # they average over the dimensions, we sum
  np.testing.assert_allclose(float(loss), D * float(loss_t), rtol=2e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_t)):
    np.testing.assert_allclose(a, D * b, rtol=2e-5, atol=1e-7)
  # Their σ_min = 1e-5 moves the loss by about that much, no more.
  targets_eps = their_get_targets(
      FLAGS, call_model_fn, x1, y, x1[n_diag:], y[n_diag:], x0[n_diag:], t_bst_int, x0, t_fm_int,
      jnp.zeros(B, bool))
  x_e, v_e, *_ = targets_eps
  loss_eps = their_loss(as_theirs(params, K), params, x_e, v_e, t_their, dt_base, labels_their)
  np.testing.assert_allclose(float(loss), D * float(loss_eps), rtol=1e-3)


@pytest.mark.parametrize('n_off,T,dt_bias', [(32, 128, False), (32, 128, True), (5, 8, False),
                                              (40, 16, True), (0, 128, False)])
def test_draw_times_on_their_grid(loss_config, n_off, T, dt_bias):
  """The levels are their dt_base pattern (B/8 = 32 at T = 128 is their ImageNet run: 4 per level,
  the 4 left over at d = 1), s lies on the grid of its d and t = s + d ≤ 1; the diagonal times lie
  on the 1/T grid below 1."""
  sc = loss_config.shortcut
  sc.denoise_timesteps, sc.dt_bias = T, dt_bias
  s, t, lev = shortcut.draw_times(jax.random.key(3), 50, n_off, sc)
  K = int(np.log2(T))
  if not dt_bias:
    pattern = np.concatenate([np.repeat(K - 1 - np.arange(K), n_off // K),
                              np.zeros(n_off - K * (n_off // K))])
  else:
    pattern = np.repeat(K - 1 - np.arange(K - 2), (n_off // 2) // K)
    pattern = np.concatenate([pattern, np.ones(n_off // 4), np.zeros(n_off // 4)])
    pattern = np.concatenate([pattern, np.zeros(n_off - pattern.shape[0])])
  np.testing.assert_array_equal(np.asarray(lev), pattern)
  grid = np.asarray(s[50:]) * 2.0 ** np.asarray(lev)
  np.testing.assert_array_equal(grid, np.round(grid))
  assert np.all((grid >= 0) & (grid < 2.0 ** np.asarray(lev)))
  np.testing.assert_allclose(np.asarray(t[50:] - s[50:]), 2.0 ** -np.asarray(lev))
  fm = np.asarray(s[:50]) * T
  np.testing.assert_array_equal(fm, np.round(fm))
  assert np.all((fm >= 0) & (fm < T)) and np.array_equal(np.asarray(s[:50]), np.asarray(t[:50]))


def test_bootstrap_cfg_without_labels_is_a_clear_error(loss_config):
  loss_config.shortcut.bootstrap_cfg = True
  x = jnp.zeros((8, 2, 2, 1))
  with pytest.raises(ValueError, match='class-conditional'):
    losses.get('shortcut')(net, _params(jax.random.key(0)), x, x, jax.random.key(0),
                           config=loss_config)


# ---- The exact Gaussian flow map.

CASES = [([1.5], 1.0, 0.5), ([0.3, -1.0, 2.0], 1.0, 0.3)]


def euler_map(truth, T):
  """The shortcut fixed point on its grid: v_E(s, t, x) = (E^n(x) − x)/(t − s), E one Euler step of
  length 1/T of the true velocity from grid times, n = (t − s) T; the velocity itself on the
  diagonal."""
  def v(params, s, t, x, y=None):
    del params, y
    n = jnp.round((t - s) * T).astype(jnp.int32)

    def step(i, z):
      tau = s + i / T
      z_next = z + go.average_velocity(truth, tau, tau, z) / T
      return jnp.where((i < n)[:, None], z_next, z)

    z = jax.lax.fori_loop(0, T, step, x)
    gap = jnp.where(t > s, t - s, 1.0)[:, None]
    return jnp.where((t > s)[:, None], (z - x) / gap, go.average_velocity(truth, s, s, x))
  return v


@pytest.mark.parametrize('case', CASES)
def test_exact_map_closes_every_level_but_the_finest(loss_config, case):
  """Two half jumps of the exact map are one jump (the semigroup), so the bootstrap residual
  vanishes wherever both half jumps are jumps; at the finest level (d = 2/T) the half jumps are
  Euler steps of the velocity, off the exact map by O(1/T) in velocity, so the exact map is not the
  fixed point there, and less so as T grows."""
  sc = loss_config.shortcut
  sc.clip = 0.0
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 256)
    finest = []
    for T in (16, 64):
      sc.denoise_timesteps = T
      s, t, lev = shortcut.draw_times(jax.random.key(1), 0, 256, sc, jnp.float64)
      x_s = (1 - s)[:, None] * x0 + s[:, None] * x1
      v_bar = shortcut.bootstrap_target(go.average_velocity, truth, s, lev, x_s, None, sc)
      r = jnp.sum((v_bar - go.average_velocity(truth, s, t, x_s)) ** 2, axis=1)
      fine = np.asarray(lev) == int(np.log2(T)) - 1
      assert fine.any() and (~fine).any()
      assert float(jnp.max(r[~fine])) < 1e-20, float(jnp.max(r[~fine]))
      finest.append(float(jnp.mean(r[fine])))
      pert = shortcut.bootstrap_target(go.average_velocity, go.perturb(truth), s, lev, x_s, None,
                                       sc)
      r_pert = jnp.sum((pert - go.average_velocity(go.perturb(truth), s, t, x_s)) ** 2, axis=1)
      assert float(jnp.mean(r_pert[~fine])) > 1e-6
    assert 0 < finest[1] < finest[0] / 8, finest     # O(h²) in the squared residual: 16× here


@pytest.mark.parametrize('case', CASES)
def test_fixed_point_is_the_euler_map_on_the_grid(loss_config, case):
  """The bootstrap residual of the whole loss vanishes for the T-step Euler map of the velocity
  and not for the exact map: what shortcut models learn off the diagonal is the Euler map."""
  c = loss_config
  c.diag_fraction = 0.25
  c.shortcut.denoise_timesteps, c.shortcut.clip = 8, 0.0
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 256)
    run = lambda fn: float(losses.get('shortcut')(fn, truth, x0, x1, jax.random.key(1),
                                                  config=c)[1]['loss/offdiag'])
    at_euler, at_exact = run(euler_map(truth, 8)), run(go.average_velocity)
    assert at_exact > 1e-4, at_exact
    assert at_euler < 1e-12 * at_exact, (at_euler, at_exact)


def test_flow_matching_part_has_zero_expected_gradient_at_truth(loss_config):
  """The diagonal examples are flow matching on the 1/T grid: zero gradient in expectation at the
  true velocity."""
  c = loss_config
  c.diag_fraction = 1.0
  g_truth, g_off = go.expected_gradient_norms(losses.get('shortcut'), CASES[0], 200_000, c)
  assert g_off > 0.05, g_off
  assert g_truth < 0.1 * g_off, (g_truth, g_off)
