"""α-Flow (flowmap_jax/losses/alphaflow.py): the official forward and curriculum on the same draws,
the step the train step passes, and the exact Gaussian flow map (docs/oracle.md)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gaussian_oracle as go
from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax.losses import alphaflow
from flowmap_jax.losses import common

NUM_CLASSES, B = 3, 32
_W = jax.random.normal(jax.random.key(11), (NUM_CLASSES + 1, 2)) * 0.5
PARAMS = {'a': jnp.array([0.7, -1.1]), 'b': jnp.array([0.3, 0.9])}


def _net(p, s, t, x, y):  # a label-dependent network, nonlinear in every argument
  return jnp.tanh(p['a'] * x + (t - s)[:, None] * p['b'] + s[:, None] ** 2 + _W[y]) * x


def _official_loss(params, d, x0, x1, alpha, c):
  """snap-research/alphaflow src/training/loss.py, AlphaFlowLoss.forward (with sample_traj_params,
  _compute_velocity_cfg, _compute_mean_velocity_c, _compute_mean_velocity_d), commit
  b0fef77d8bf16ac4257080c55542b3f6205a8d82, written out in JAX in their convention: noise at
  t = 1, x_t = (1 − t) x + t ε (sigma_noise 1), net(x, sigma_next=r, sigma=t) = u(x, t, r) =
  −v_θ(1 − t, 1 − r, x). Their draws are ours: (t, t_next) of `d`, its first n_diag rows the
  flow-matching rows (ratio_fm), the batch's mean over its per-row losses. Labels are not dropped
  here: they drop inside the guidance interval only and keep the guided target for a dropped row,
  where ours drops everywhere (step.py) and regresses dropped rows on İ (meanflow.guided_velocity).
  """
  sg = jax.lax.stop_gradient
  null = NUM_CLASSES
  net = lambda x, t_next, t, y: -_net(params, 1 - t, 1 - t_next, x, y)
  t, t_next = 1 - d.s, 1 - d.t
  fm = jnp.arange(B) < d.n_diag
  dt = jnp.where(fm, 0.0, alpha * (t - t_next))
  x_t = (1 - t[:, None]) * x1 + t[:, None] * x0
  velocity = x0 - x1
  cond = d.y

  # _compute_velocity_cfg (torch.no_grad)
  omega, kappa = c.guidance_omega, c.guidance_kappa
  t_min, t_max = 1 - c.guidance_s_max, 1 - c.guidance_s_min
  mask = (t > t_min) & (t < t_max)
  uncond = net(x_t, t, t, jnp.full_like(cond, null))
  cond_v = net(x_t, t, t, cond)
  guided = omega * velocity + kappa * cond_v + (1 - omega - kappa) * uncond
  velocity_cfg = sg(jnp.where(mask[:, None], guided, velocity))

  mask_c = dt == 0
  # _compute_mean_velocity_c (torch.no_grad): fm rows keep velocity_cfg, the others MeanFlow's
  _, dudt = jax.jvp(lambda x, tn, t_: net(x, tn, t_, cond), (x_t, t_next, t),
                    (velocity_cfg, jnp.zeros_like(t), jnp.ones_like(t)))
  mf = ~jnp.isclose(t_next, t)
  mean_velocity_c = jnp.where(mf[:, None], velocity_cfg - (t - t_next)[:, None] * dudt,
                              velocity_cfg)
  # _compute_mean_velocity_d (torch.no_grad)
  x_t_minus_dt = x_t - dt[:, None] * velocity_cfg
  if alpha == 1.0:   # isclose(1 − dt/(t − t_next), 0).all() on the discrete rows
    mean_velocity_next = jnp.zeros_like(x_t_minus_dt)
  else:
    mean_velocity_next = net(x_t_minus_dt, t_next, t - dt, cond)
  mean_velocity_d = (dt[:, None] * velocity_cfg + (t - dt - t_next)[:, None] * mean_velocity_next
                     ) / (t - t_next)[:, None]
  mean_velocity_d = jnp.clip(mean_velocity_d, -c.clamp_target, c.clamp_target)
  # torch.cat([c rows, d rows]): the c rows (fm, or all when α = 0) come first, so row order holds
  mean_velocity = sg(jnp.where(mask_c[:, None], mean_velocity_c, mean_velocity_d))

  pred_mean_velocity = net(x_t, t_next, t, cond)
  loss_unscaled = jnp.mean((pred_mean_velocity - mean_velocity) ** 2, axis=1)
  weight = jnp.where(mask_c, 1.0, alpha) / (sg(loss_unscaled) + c.adaptive_c)
  return jnp.mean(weight * loss_unscaled)


def _get_ratio(cfg, cur_step):
  """AlphaFlowLoss.get_ratio, as it is (Python floats), for the schedules alphaflow.py has."""
  if cfg['scheduler'] == 'constant':
    current_ratio = cfg['initial_value']
  elif cur_step < cfg['change_init_steps']:
    current_ratio = cfg['initial_value']
  elif cur_step > cfg['change_end_steps']:
    current_ratio = cfg['end_value']
  else:
    span = cfg['change_end_steps'] - cfg['change_init_steps']
    if cfg['scheduler'] == 'linear':
      progress = (cur_step - cfg['change_init_steps']) / span
      current_ratio = cfg['initial_value'] + (cfg['end_value'] - cfg['initial_value']) * progress
    else:
      middle_step = cfg['change_init_steps'] + span / 2
      progress = (cur_step - middle_step) / span
      current_ratio = cfg['initial_value'] + (cfg['end_value'] - cfg['initial_value']) * (
          1 / (1 + math.exp(-progress * cfg['gamma'])))
  if current_ratio < cfg['clamp_value']:
    current_ratio = 0.0
  elif current_ratio > 1 - cfg['clamp_value']:
    current_ratio = 1.0
  return current_ratio


@pytest.mark.parametrize('schedule', ['sigmoid', 'linear', 'constant'])
def test_the_curriculum_is_the_official_get_ratio(loss_config, schedule):
  a = loss_config.alphaflow
  a.alpha_schedule, a.alpha_start, a.alpha_end = schedule, 1.0, 0.0
  a.alpha_start_step, a.alpha_end_step, a.alpha_gamma, a.alpha_clamp = 1000, 9000, 25.0, 0.005
  theirs = dict(scheduler=schedule, initial_value=1.0, end_value=0.0, change_init_steps=1000,
                change_end_steps=9000, gamma=25.0, clamp_value=0.005)
  steps = np.array([0, 999, 1000, 2500, 4000, 4999, 5000, 6100, 7000, 8999, 9000, 9001, 20000])
  ours = jax.jit(jax.vmap(lambda k: alphaflow.alpha_at(k, a)))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(ours, [_get_ratio(theirs, int(k)) for k in steps], atol=1e-6)
  if schedule != 'constant':   # it moves, and the clamp sets α ≈ 1e-4 at step 8999 to 0
    assert float(ours[0]) == 1.0 and float(ours[-1]) == 0.0 and 0.1 < float(ours[6]) < 0.9
    assert float(ours[9]) == 0.0
  assert float(alphaflow.alpha_at(None, a)) == float(ours[0])   # no step: step 0


@pytest.mark.parametrize('alpha', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('guidance', [None, (0.2, 0.92, 0.25, 1.0)])
def test_alphaflow_is_the_official_forward_in_their_convention(loss_config, alpha, guidance):
  """Loss and gradient equal the official forward on the same draws: MeanFlow's jvp target at
  α = 0, the finite step at 0 < α < 1 (clipped), trajectory flow matching at α = 1, the α weight,
  the adaptive weight on the per-row mean, and guidance in the target (their XL/2 values)."""
  k = jax.random.split(jax.random.key(5), 3)
  x0, x1 = jax.random.normal(k[0], (B, 2)), jax.random.normal(k[1], (B, 2)) * 1.5 + 1.0
  y = jax.random.randint(k[2], (B,), 0, NUM_CLASSES)
  c = loss_config
  c.diag_fraction = 0.25
  a = c.alphaflow
  # clamp_target 2: at α = 1 it clips 20 of the 48 entries of the off-diagonal targets.
  a.alpha_schedule, a.alpha_start, a.clamp_target = 'constant', alpha, 2.0
  if guidance:
    a.guidance_omega, a.guidance_kappa, a.guidance_s_min, a.guidance_s_max = guidance
  rng = jax.random.key(7)
  d = common.draw(x0, x1, rng, c, y)

  ours = lambda p: losses.get('alphaflow')(_net, p, x0, x1, rng, config=c, y=y,
                                           null_label=NUM_CLASSES)
  theirs = lambda p: _official_loss(p, d, x0, x1, alpha, a)
  value, aux = jax.jit(ours)(PARAMS)
  assert float(aux['curriculum/alpha']) == np.float32(alpha)
  np.testing.assert_allclose(float(value), float(jax.jit(theirs)(PARAMS)), rtol=1e-5)
  g_ours = jax.jit(jax.grad(lambda p: ours(p)[0]))(PARAMS)
  g_theirs = jax.jit(jax.grad(theirs))(PARAMS)
  for key in PARAMS:
    np.testing.assert_allclose(g_ours[key], g_theirs[key], rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(g_ours['a']).sum()) > 1e-3


@pytest.mark.parametrize('alpha', [0.0, 0.3])
def test_the_select_on_cpu_equals_lax_cond(loss_config, alpha, monkeypatch):
  """On the CPU backend both branches run and a select picks one (XLA:CPU's convolutions inside a
  conditional are slow); loss and gradient equal lax.cond's, which GPUs and TPUs run."""
  k = jax.random.split(jax.random.key(3), 3)
  x0, x1 = jax.random.normal(k[0], (B, 2)), jax.random.normal(k[1], (B, 2)) * 1.5 + 1.0
  y = jax.random.randint(k[2], (B,), 0, NUM_CLASSES)
  c = loss_config
  c.alphaflow.alpha_schedule, c.alphaflow.alpha_start = 'constant', alpha

  def value_and_grad():
    f = lambda p: losses.get('alphaflow')(_net, p, x0, x1, jax.random.key(7), config=c, y=y,
                                          null_label=NUM_CLASSES)[0]
    return jax.jit(jax.value_and_grad(f))(PARAMS)

  assert jax.default_backend() == 'cpu'
  selected = value_and_grad()
  monkeypatch.setattr(alphaflow.jax, 'default_backend', lambda: 'gpu')
  conditional = value_and_grad()
  np.testing.assert_allclose(float(selected[0]), float(conditional[0]), rtol=1e-6)
  for key in PARAMS:
    np.testing.assert_allclose(selected[1][key], conditional[1][key], rtol=1e-5, atol=1e-7)
  program = lambda select: str(jax.make_jaxpr(lambda a: alphaflow.branch(
      a > 0, lambda _: a, lambda _: 2 * a, select=select))(0.5))
  assert 'cond[' in program(False) and 'cond[' not in program(True) and 'select_n' in program(True)


def test_the_train_step_passes_the_step_to_the_curriculum():
  """The registry entry asks for the step (takes_step) and step.py passes state.step: the smoke
  config's sigmoid over its 4 steps reads α = 1, ½ and 0 (the jvp branch) at steps 0, 2 and 4."""
  config = config_io.load('configs/alphaflow_checkerboard.py:smoke')
  assert losses.spec('alphaflow').takes_step and not losses.spec('meanflow').takes_step
  exp = state_lib.Experiment(config)
  state = exp.init_state()

  @jax.jit
  def alpha_at_step(k):
    at = state.replace(step=k)
    return step_lib.loss_of_params(exp, at, {}, None)(at.params)[1]['curriculum/alpha']

  seen = [float(alpha_at_step(jnp.asarray(k, jnp.int32))) for k in (0, 2)]
  # One whole train step (it donates its state) at step 4: the jvp branch, finite.
  new, metrics = step_lib.jit_train_step(exp)(state.replace(step=jnp.asarray(4, jnp.int32)), {},
                                              None)
  assert np.isfinite(float(metrics['loss'])) and int(new.step) == 5
  seen.append(float(metrics['curriculum/alpha']))
  np.testing.assert_allclose(seen, [1.0, 0.5, 0.0], atol=1e-6)


def _grad_norm_at(apply_fn, config):
  """(params, x0, x1, step) -> the gradient's norm, compiled once for every α: α is set by the step
  (with the data arguments, not constants of the program, which compile far slower)."""
  loss = lambda q, x0, x1, k: losses.get('alphaflow')(apply_fn, q, x0, x1, jax.random.key(1),
                                                       config=config, step=k)[0]
  grad = jax.jit(jax.grad(loss))
  return lambda *args: float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(grad(*args)))))


def _velocity_everywhere(p, s, t, x, y=None):
  """v(s, t, x) = b_s(x) for every t: the instantaneous velocity, no flow map."""
  del t
  return go.average_velocity(p, s, s, x, y)


@pytest.mark.parametrize('case', [([0.3, -1.0, 2.0], 1.0, 0.3)])
def test_only_alpha_zero_has_the_exact_map_as_its_fixed_point(loss_config, case):
  """The exact Gaussian map: at α = 0 (MeanFlow) the expected gradient vanishes there. At α > 0 the
  target's mean is X(s_α, t, x_s + (s_α − s) b_s(x_s)), one Euler step to s_α and the exact jump:
  the map is no fixed point, the bias grows with α, and at α = 1 the fixed point is the velocity
  b_s(x) for every t (trajectory flow matching), where the expected gradient vanishes instead.
  (At α = 0.1 the bias is about the sampling noise of 200k examples, and MeanFlow's jvp along İ_s
  is noisier than the finite step: the noise floor is g(0), the bias is read from α = 0.5 and 1.)"""
  c = loss_config
  c.diag_fraction = 0.25
  a = c.alphaflow
  a.clamp_target = 1e6   # no clip: it would bias every α > 0
  # α = 1 − step/1000: one compiled gradient serves every α.
  a.alpha_schedule, a.alpha_start, a.alpha_end, a.alpha_clamp = 'linear', 1.0, 0.0, 0.0
  a.alpha_start_step, a.alpha_end_step = 0, 1000
  step_of = lambda alpha: jnp.asarray(round(1000 * (1 - alpha)), jnp.int32)
  with jax.enable_x64(True):
    truth = go.make(*case)
    x0, x1 = go.sample(jax.random.key(0), truth, 200_000)
    off = dict(truth, mu=truth['mu'] * 1.05 + 0.05, sigma1=truth['sigma1'] * 1.05)
    grad_norm = _grad_norm_at(go.average_velocity, c)
    g = {alpha: grad_norm(truth, x0, x1, step_of(alpha)) for alpha in (0.0, 0.1, 0.5, 1.0)}
    g_off = grad_norm(off, x0, x1, step_of(0.0))
    g_velocity = _grad_norm_at(_velocity_everywhere, c)(truth, x0, x1, step_of(1.0))
  assert g_off > 0.05, g_off
  assert g[0.0] < 0.1 * g_off, (g, g_off)
  assert 3 * max(g[0.0], g[0.1]) < g[0.5] < 0.7 * g[1.0], g
  assert g_velocity < 0.1 * g[1.0], (g_velocity, g)


def test_a_curriculum_that_does_not_end_with_training_is_warned_of():
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  config = config_io.load('configs/alphaflow_checkerboard.py')
  assert validate.warnings_of(config) == []          # its curriculum ends at train.num_steps
  config.train.num_steps = 16000
  (warning,) = validate.warnings_of(config)
  assert warning.startswith('loss.alphaflow.alpha_end_step=8000 is not train.num_steps=16000')
  assert warning.endswith('--config.loss.alphaflow.alpha_end_step=16000.')
  config.loss.alphaflow.alpha_schedule = 'constant'   # no curriculum: nothing to end
  assert validate.warnings_of(config) == []
