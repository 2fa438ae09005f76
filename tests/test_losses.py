"""The loss API on a real flax MLP: registry, jit, grad, vmap, options and clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import models


@pytest.fixture(scope='module')
def mlp():
  config = config_io.load('configs/lsd_checkerboard.py')
  config.model.mlp.width, config.model.mlp.depth = 64, 2
  net = models.get(config.model, sigma=1.0)
  x = jnp.zeros((4, 2))
  params = net.init(jax.random.key(0), jnp.zeros(4), jnp.zeros(4), x)['params']
  apply_fn = lambda p, s, t, x, y=None: net.apply({'params': p}, s, t, x)
  teacher_params = jax.tree.map(lambda a: a * 1.1, params)
  teacher = lambda t, x, y=None: apply_fn(teacher_params, t, t, x)
  k0, k1 = jax.random.split(jax.random.key(1))
  x0 = jax.random.normal(k0, (64, 2))
  x1 = jax.random.uniform(k1, (64, 2), minval=-2, maxval=2)
  return apply_fn, params, teacher, x0, x1


@pytest.mark.parametrize('name', losses.names())
def test_every_loss_jits_grads_and_vmaps(mlp, loss_config, name):
  apply_fn, params, teacher, x0, x1 = mlp
  ema = jax.tree.map(lambda a: a * 0.9, params)
  loss_fn = losses.get(name)

  @jax.jit
  def value_and_grad(p, rng):
    return jax.value_and_grad(
        lambda q: loss_fn(apply_fn, q, x0, x1, rng, config=loss_config, ema_params=ema,
                          teacher=teacher), has_aux=True)(p)

  (loss, aux), grads = value_and_grad(params, jax.random.key(2))
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert {'loss/diag', 'loss/offdiag'} <= set(aux)
  assert all(np.isfinite(float(v)) for v in aux.values())
  gnorm = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads))
  assert np.isfinite(gnorm) and gnorm > 0
  # The reported parts add up to the loss.
  frac = float(aux['time/diag_fraction'])
  expected = frac * float(aux['loss/diag']) + (1 - frac) * float(aux['loss/offdiag'])
  if name != 'fm':
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)

  batched = jax.vmap(lambda r: loss_fn(apply_fn, params, x0, x1, r, config=loss_config,
                                       ema_params=ema, teacher=teacher)[0])
  vals = batched(jax.random.split(jax.random.key(3), 3))
  assert vals.shape == (3,) and np.all(np.isfinite(vals))


def test_registry():
  assert losses.names() == sorted(['fm', 'lmd', 'emd', 'itvm', 'lsd', 'esd', 'psd', 'meanflow',
                                  'imeanflow', 'alphaflow', 'shortcut', 'tvm'])
  with pytest.raises(ValueError, match=r"Unknown loss 'nope'.*'esd'"):
    losses.get('nope')


@pytest.mark.parametrize('name', [n for n in losses.names() if losses.spec(n).needs_teacher])
def test_missing_teacher_is_a_clear_error(mlp, loss_config, name):
  apply_fn, params, _, x0, x1 = mlp
  with pytest.raises(ValueError, match='teacher'):
    losses.get(name)(apply_fn, params, x0, x1, jax.random.key(0), config=loss_config)


@pytest.mark.parametrize('u', ['t_minus_tau', 's_plus_tau', 'uniform'])
@pytest.mark.parametrize('target', ['ema', 'teacher'])
@pytest.mark.parametrize('y_source', ['ema', 'online'])
def test_itvm_options_run(mlp, loss_config, u, target, y_source):
  apply_fn, params, teacher, x0, x1 = mlp
  c = loss_config
  c.itvm.u, c.itvm.terminal_target, c.itvm.y_source = u, target, y_source
  loss, aux = jax.jit(lambda p: losses.get('itvm')(apply_fn, p, x0, x1, jax.random.key(0),
                                                   config=c, teacher=teacher))(params)
  assert np.isfinite(float(loss)) and float(aux['loss/term']) > 0 and float(aux['loss/init']) > 0


def test_itvm_heun_short_target_is_the_teachers_heun_step(mlp, loss_config):
  """τ = 1 makes every off-diagonal pair short (u = s): the terminal term is then exactly
  ‖v_θ(s,t,x_s) − ½(b_s(x_s) + b_t(x_s + (t − s) b_s(x_s)))‖², on the loss's own draw."""
  from flowmap_jax.losses import common  # pylint: disable=g-import-not-at-top
  apply_fn, params, teacher, x0, x1 = mlp
  c = loss_config
  c.itvm.tau, c.itvm.short_target = 1.0, 'heun'
  rng = jax.random.key(3)
  _, aux = losses.get('itvm')(apply_fn, params, x0, x1, rng, config=c, teacher=teacher)
  d = common.draw(x0, x1, jax.random.split(rng)[0], c)
  s, t, x_s = d.off(d.s), d.off(d.t), d.off(d.x_s)
  b_s = teacher(s, x_s, None)
  heun = 0.5 * (b_s + teacher(t, x_s + (t - s)[:, None] * b_s, None))
  want = jnp.mean(jnp.sum((apply_fn(params, s, t, x_s, None) - heun) ** 2, axis=-1))
  np.testing.assert_allclose(float(aux['loss/term']), float(want), rtol=1e-5)
  c.itvm.short_target = 'terminal'  # the EMA target (here θ itself): nothing to match
  _, aux = losses.get('itvm')(apply_fn, params, x0, x1, rng, config=c, teacher=teacher)
  assert float(aux['loss/term']) < 1e-10


def test_itvm_online_y_sends_gradient_through_both_ends(mlp, loss_config):
  """y_source=online: (X_θ(s,t) − X_θ(s,u))/(t − u) is differentiated at both ends. With θ⁻ = θ
  the loss value equals the ema variant's, and the gradients differ by the y end's contribution."""
  apply_fn, params, teacher, x0, x1 = mlp
  c = loss_config
  c.itvm.w_init = 0.0
  c.itvm.tau = 0.5

  def grads(y_source):
    c.itvm.y_source = y_source
    f = lambda p: losses.get('itvm')(apply_fn, p, x0, x1, jax.random.key(0), config=c,
                                     ema_params=params, teacher=teacher)[0]
    return jax.value_and_grad(f)(params)

  (l_ema, g_ema), (l_on, g_on) = grads('ema'), grads('online')
  np.testing.assert_allclose(float(l_ema), float(l_on), rtol=1e-5)
  flat = lambda g: jnp.concatenate([a.ravel() for a in jax.tree.leaves(g)])
  g_ema, g_on = flat(g_ema), flat(g_on)
  assert float(jnp.linalg.norm(g_ema)) > 0
  y_end = float(jnp.linalg.norm(g_on - g_ema))
  assert y_end > 1e-3 * float(jnp.linalg.norm(g_ema)), y_end


def test_lsd_gradient_flows_only_through_dt_X(mlp, loss_config):
  """LSD's target sg v_θ(t, t, sg X) carries no gradient: the loss gradient equals the vjp of
  ∂_t X_θ alone with cotangent 2r/B, r the residual."""
  from flowmap_jax import flow_map
  from flowmap_jax.losses import common
  apply_fn, params, _, x0, x1 = mlp
  c = loss_config
  c.diag_fraction = 0.0
  rng = jax.random.key(0)
  g = jax.grad(lambda p: losses.get('lsd')(apply_fn, p, x0, x1, rng, config=c)[0])(params)
  d = common.draw(x0, x1, rng, c)
  dX_of = lambda p: flow_map.X_and_dt(apply_fn, p, d.s, d.t, d.x_s)[1]
  X, dX = flow_map.X_and_dt(apply_fn, params, d.s, d.t, d.x_s)
  r = dX - flow_map.velocity(apply_fn, params, d.t, X)
  _, vjp = jax.vjp(dX_of, params)
  (expected,) = vjp(2 * r / r.shape[0])
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('frac', [0.0, 1.0])
def test_every_loss_at_the_ends_of_diag_fraction(mlp, loss_config, frac):
  apply_fn, params, teacher, x0, x1 = mlp
  loss_config.diag_fraction = frac
  for name in losses.names():
    loss, aux = losses.get(name)(apply_fn, params, x0[:8], x1[:8], jax.random.key(0),
                                 config=loss_config, teacher=teacher)
    assert np.isfinite(float(loss)) and float(loss) > 0, name


@pytest.mark.parametrize('name', losses.names())
def test_every_network_call_gets_the_labels_of_its_examples(mlp, loss_config, name):
  """A class-conditional network must see, in every call (online, target, teacher, jvp), the label
  of each example it is given: labels travel with the batch through every split and concat."""
  apply_fn, params, teacher, x0, x1 = mlp
  y = jnp.arange(x0.shape[0], dtype=jnp.int32)
  seen = []

  def labelled(fn):
    def call(*args):
      *_, x_, y_ = args
      assert y_ is not None and y_.shape == (x_.shape[0],), 'a call without per-example labels'
      seen.append(y_.shape[0])
      return fn(*args[:-1])
    return call

  checked_apply = labelled(lambda p, s, t, x_: apply_fn(p, s, t, x_))
  checked_teacher = labelled(lambda t, x_: teacher(t, x_))
  loss, _ = losses.get(name)(checked_apply, params, x0, x1, jax.random.key(0), config=loss_config,
                             ema_params=params, teacher=checked_teacher, y=y)
  assert seen and np.isfinite(float(loss))


def test_draw_keeps_labels_aligned_with_examples(loss_config):
  from flowmap_jax.losses import common  # pylint: disable=g-import-not-at-top
  x0 = jnp.zeros((16, 2))
  y = jnp.arange(16)
  x1 = jnp.stack([y.astype(jnp.float32), y.astype(jnp.float32)], axis=-1)
  d = common.draw(x0, x1, jax.random.key(3), loss_config, y)
  # x_s = s·x1 for the linear interpolant from x0 = 0: its ratio to s recovers the label.
  for part in (d.diag, d.off):
    s, x_s, lab = part(d.s), part(d.x_s), part(d.y)
    np.testing.assert_allclose(x_s[:, 0], s * lab, rtol=1e-5, atol=1e-5)


def test_meanflow_adaptive_weighting(mlp, loss_config):
  """ℓ / sg((ℓ + c)^p): with p = 0 the plain loss; with p = 1 each example's loss divided by its own
  (stopped) size plus c, gradients included."""
  from flowmap_jax.losses import meanflow  # pylint: disable=g-import-not-at-top
  apply_fn, params, _, x0, x1 = mlp
  c = loss_config
  c.diag_fraction = 0.5
  run = lambda p: losses.get('meanflow')(apply_fn, p, x0, x1, jax.random.key(0), config=c)
  c.meanflow.adaptive_p = 0.0
  plain, aux = run(params)
  c.meanflow.adaptive_p, c.meanflow.adaptive_c = 1.0, 0.01
  weighted, aux_w = run(params)
  assert float(weighted) < 1.0 < float(plain)   # each term is ℓ / (ℓ + 0.01) < 1
  terms = jnp.array([1.0, 4.0])
  np.testing.assert_allclose(meanflow.adaptive(terms, c.meanflow), terms / (terms + 0.01))
  g = jax.grad(lambda a: jnp.sum(meanflow.adaptive(a, c.meanflow)))(terms)
  np.testing.assert_allclose(g, 1 / (terms + 0.01))


def test_meanflow_guidance_is_the_official_target_in_their_convention(loss_config):
  """MeanFlow with guidance in the target equals Gsunshine/meanflow's `forward`, written out here in
  their convention (t = 1 noise, z_t = (1 − t) x + t e, u(z, t, r) = −v_θ(1 − t, 1 − r, z)) on the
  same draws: guided velocity, label dropout to the null class, window, jvp and adaptive weighting."""
  from flowmap_jax.losses import common  # pylint: disable=g-import-not-at-top
  num_classes, B = 3, 32
  k = jax.random.split(jax.random.key(5), 4)
  W = jax.random.normal(k[0], (num_classes + 1, 2)) * 0.5

  def apply_fn(p, s, t, x, y):  # a label-dependent network, nonlinear in every argument
    return jnp.tanh(p['a'] * x + (t - s)[:, None] * p['b'] + s[:, None] ** 2 + W[y]) * x

  params = {'a': jnp.array([0.7, -1.1]), 'b': jnp.array([0.3, 0.9])}
  x0, x1 = jax.random.normal(k[1], (B, 2)), jax.random.normal(k[2], (B, 2)) + 2.0
  y = jax.random.randint(k[3], (B,), 0, num_classes + 1)   # some already dropped to the null class
  c = loss_config
  c.diag_fraction = 0.25
  m = c.meanflow
  m.guidance_omega, m.guidance_kappa, m.guidance_s_min, m.guidance_s_max = 1.5, 0.5, 0.2, 0.9
  rng = jax.random.key(7)
  ours, _ = losses.get('meanflow')(apply_fn, params, x0, x1, rng, config=c, y=y,
                                   null_label=num_classes)

  d = common.draw(x0, x1, rng, c, y)       # the same times and points the loss drew
  t_mf, r_mf = 1 - d.s, 1 - d.t             # their (t, r): r ≤ t
  z, e, x = d.x_s, x0, x1
  u_fn = lambda z_, t_, r_, lab: -apply_fn(params, 1 - t_, 1 - r_, z_, lab)
  v = e - x
  t_start, t_end = 1 - m.guidance_s_max, 1 - m.guidance_s_min
  inside = ((t_mf >= t_start) & (t_mf <= t_end))[:, None]
  omega = jnp.where(inside, m.guidance_omega, 1.0)
  kappa = jnp.where(inside, m.guidance_kappa, 0.0)
  v_uncond = u_fn(z, t_mf, t_mf, jnp.full_like(y, num_classes))
  v_cond = u_fn(z, t_mf, t_mf, y)
  v_g = omega * v + (1 - omega - kappa) * v_uncond + kappa * v_cond
  v_g = jnp.where((y == num_classes)[:, None], v, v_g)
  u, du_dt = jax.jvp(lambda z_, t_, r_: u_fn(z_, t_, r_, y), (z, t_mf, r_mf),
                     (v_g, jnp.ones_like(t_mf), jnp.zeros_like(r_mf)))
  u_tgt = v_g - jnp.clip(t_mf - r_mf, 0.0, 1.0)[:, None] * du_dt
  loss = jnp.sum((u - u_tgt) ** 2, axis=1)
  loss = jnp.mean(loss / (loss + m.adaptive_c) ** m.adaptive_p)
  np.testing.assert_allclose(float(ours), float(loss), rtol=1e-5)
  # And guidance does act: without it the loss differs.
  m.guidance_omega, m.guidance_kappa = 1.0, 0.0
  plain, _ = losses.get('meanflow')(apply_fn, params, x0, x1, rng, config=c, y=y,
                                    null_label=num_classes)
  assert abs(float(plain) - float(ours)) > 1e-3


def test_meanflow_guidance_without_labels_is_a_clear_error(mlp, loss_config):
  apply_fn, params, _, x0, x1 = mlp
  loss_config.meanflow.guidance_kappa = 0.5
  with pytest.raises(ValueError, match='class-conditional'):
    losses.get('meanflow')(apply_fn, params, x0, x1, jax.random.key(0), config=loss_config)
