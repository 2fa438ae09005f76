"""The learned loss weighting exp(−w_φ(s,t))·ℓ + w_φ(s,t) (docs/losses.md §9), for every loss."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import models
from flowmap_jax import state as state_lib
from flowmap_jax import train


@pytest.fixture(scope='module')
def mlp():
  config = config_io.load('configs/lsd_checkerboard.py')
  config.model.mlp.width, config.model.mlp.depth = 32, 2
  net = models.get(config.model, sigma=1.0)
  params = net.init(jax.random.key(0), jnp.zeros(4), jnp.zeros(4), jnp.zeros((4, 2)))['params']
  apply_fn = lambda p, s, t, x, y=None: net.apply({'params': p}, s, t, x)
  teacher = lambda t, x, y=None: apply_fn(jax.tree.map(lambda a: 1.1 * a, params), t, t, x)
  k0, k1 = jax.random.split(jax.random.key(1))
  return apply_fn, params, teacher, jax.random.normal(k0, (32, 2)), jax.random.normal(k1, (32, 2))


@pytest.mark.parametrize('name', losses.names())
def test_every_loss_takes_the_weighting_per_example(mlp, loss_config, name):
  """A constant w gives exp(−w)·L + w exactly; a w that depends on the times changes the loss; the
  reported unweighted terms do not change."""
  apply_fn, params, teacher, x0, x1 = mlp
  run = lambda **kw: losses.get(name)(apply_fn, params, x0, x1, jax.random.key(2),
                                      config=loss_config, ema_params=params, teacher=teacher, **kw)
  plain, aux = run()
  const, aux_c = run(weighting=lambda s, t: jnp.full_like(s, 0.7))
  np.testing.assert_allclose(float(const), np.exp(-0.7) * float(plain) + 0.7, rtol=1e-5)
  np.testing.assert_allclose(float(aux_c['weighting/w']), 0.7, rtol=1e-6)
  np.testing.assert_allclose(float(aux_c['loss/offdiag']), float(aux['loss/offdiag']), rtol=1e-6)
  varying, _ = run(weighting=lambda s, t: 3.0 * t - s)
  assert np.isfinite(float(varying))
  assert abs(float(varying) - float(plain)) > 1e-4


def test_the_optimal_weight_tracks_the_loss_scale():
  """min_w exp(−w)·ℓ + w is w = log ℓ: trained on a loss scale ℓ(s, t) = exp(2s + t − 1), w_φ
  learns log ℓ."""
  net = models.LossWeighting()
  k = jax.random.split(jax.random.key(0), 2)
  phi = net.init(k[0], jnp.zeros(1), jnp.zeros(1))['params']
  scale = lambda s, t: jnp.exp(2 * s + t - 1)
  tx = optax.adam(optax.cosine_decay_schedule(1e-2, 2000))
  opt = tx.init(phi)

  def objective(phi, key):
    st = jnp.sort(jax.random.uniform(key, (2, 1024)), axis=0)
    w = net.apply({'params': phi}, st[0], st[1])
    return jnp.mean(jnp.exp(-w) * scale(st[0], st[1]) + w)

  @jax.jit
  def step(phi, opt, key):
    g = jax.grad(objective)(phi, key)
    updates, opt = tx.update(g, opt, phi)
    return optax.apply_updates(phi, updates), opt

  for i in range(2000):
    phi, opt = step(phi, opt, jax.random.fold_in(k[1], i))
  # Judged where the times are drawn (pairs of sorted uniforms): the corners near s = t = 1 and
  # s = t = 0 are rarely drawn, so rarely learned.
  st = jnp.sort(jax.random.uniform(jax.random.key(9), (2, 4096)), axis=0)
  error = jnp.abs(net.apply({'params': phi}, st[0], st[1]) - jnp.log(scale(st[0], st[1])))
  assert float(jnp.mean(error)) < 0.03, float(jnp.mean(error))
  assert float(jnp.quantile(error, 0.95)) < 0.08, float(jnp.quantile(error, 0.95))


def test_learned_weighting_trains_checkpoints_and_resumes(tmp_path):
  """loss.weighting='learned' through the entry point's training: w_φ starts at 0, moves, is saved
  in the checkpoint with its optimiser state, and a run resumed from it ends where an uninterrupted
  one does."""
  c = config_io.load('configs/lsd_checkerboard.py:smoke')
  c.loss.weighting = 'learned'
  c.train.num_steps, c.train.checkpoint_every = 20, 10
  exp = state_lib.Experiment(c)
  init = exp.init_state()
  w0 = exp.weighting_fn(init.weighting['params'])(jnp.array([0.1, 0.5]), jnp.array([0.9, 0.5]))
  np.testing.assert_array_equal(w0, 0.0)

  train.train_and_evaluate(c, str(tmp_path / 'whole'))
  whole = checkpoint.restore_latest(checkpoint.manager(str(tmp_path / 'whole')),
                                    exp.abstract_state())
  assert int(whole.step) == 20
  w = exp.weighting_fn(whole.weighting['params'])(jnp.array([0.1, 0.5]), jnp.array([0.9, 0.5]))
  assert float(jnp.max(jnp.abs(w))) > 0   # φ was trained

  # The same run again from its step-10 checkpoint (the later one removed): it must end the same.
  d = tmp_path / 'resumed'
  shutil.copytree(tmp_path / 'whole', d)
  shutil.rmtree(d / 'checkpoints' / '20')
  train.train_and_evaluate(c, str(d))
  resumed = checkpoint.restore_latest(checkpoint.manager(str(d)), exp.abstract_state())
  for a, b in zip(jax.tree.leaves(whole.weighting), jax.tree.leaves(resumed.weighting)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_from_before_the_weighting_field_restores(tmp_path):
  """A run checkpointed before TrainState had `weighting` resumes (with no learned weighting) instead
  of having its checkpoints set aside as unreadable."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  c = config_io.load('configs/lsd_checkerboard.py:smoke')
  exp = state_lib.Experiment(c)
  state = exp.init_state()
  older = {k: v for k, v in vars(state).items() if k != 'weighting'}   # the old layout
  mngr = checkpoint.manager(str(tmp_path))
  mngr.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(older)), force=True)
  mngr.wait_until_finished()
  restored = checkpoint.restore_latest(checkpoint.manager(str(tmp_path)), exp.abstract_state())
  assert restored is not None and restored.weighting == {}
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(restored.params)):
    np.testing.assert_array_equal(a, b)
  assert not (tmp_path / 'checkpoints_unreadable').exists()
