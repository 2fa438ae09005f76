"""jvp time derivatives against central finite differences (float64), and X(s, s, x) = x."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowmap_jax import flow_map
from flowmap_jax import models
from flowmap_jax import config_io


def tiny_net(params, s, t, x, y=None):
  """A small nonlinear v(s, t, x) in float64, enough to make every derivative non-trivial."""
  del y
  h = jnp.tanh(x @ params['w1'] + s[:, None] * params['a'] + (t - s)[:, None] * params['b'] ** 2)
  return jnp.sin(h @ params['w2']) * (1 + t[:, None] * s[:, None])


def _setup(dim=3, batch=5):
  k = jax.random.split(jax.random.key(0), 6)
  params = {'w1': jax.random.normal(k[0], (dim, 16)), 'w2': jax.random.normal(k[1], (16, dim)),
            'a': jax.random.normal(k[2], (16,)), 'b': jax.random.normal(k[3], (16,))}
  s = jax.random.uniform(k[4], (batch,)) * 0.5
  t = s + 0.4
  x = jax.random.normal(k[5], (batch, dim))
  return params, s, t, x


def _fd(f, h=1e-5):
  return (f(h) - f(-h)) / (2 * h)


def test_derivatives_match_finite_differences():
  with jax.enable_x64(True):
    params, s, t, x = _setup()
    b = jax.random.normal(jax.random.key(9), x.shape)
    X = lambda s_, t_, x_: flow_map.X(tiny_net, params, s_, t_, x_)

    X0, dt = flow_map.X_and_dt(tiny_net, params, s, t, x)
    np.testing.assert_allclose(X0, X(s, t, x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(dt, _fd(lambda h: X(s, t + h, x)), rtol=1e-7, atol=1e-9)

    _, ds = flow_map.X_and_ds(tiny_net, params, s, t, x)
    np.testing.assert_allclose(ds, _fd(lambda h: X(s + h, t, x)), rtol=1e-7, atol=1e-9)

    _, eul = flow_map.X_and_eulerian(tiny_net, params, s, t, x, b)
    np.testing.assert_allclose(eul, _fd(lambda h: X(s + h, t, x + h * b)), rtol=1e-7, atol=1e-9)

    X1, ds2, dxb = flow_map.X_ds_and_dx(tiny_net, params, s, t, x, b)
    np.testing.assert_allclose(X1, X0, atol=1e-14)
    np.testing.assert_allclose(ds2, ds, atol=1e-12)
    np.testing.assert_allclose(dxb, _fd(lambda h: X(s, t, x + h * b)), rtol=1e-7, atol=1e-9)

    v, Dv = flow_map.v_and_eulerian(tiny_net, params, s, t, x, b)
    np.testing.assert_allclose(v, tiny_net(params, s, t, x), atol=1e-14)
    np.testing.assert_allclose(
        Dv, _fd(lambda h: tiny_net(params, s + h, t, x + h * b)), rtol=1e-7, atol=1e-9)


def test_tangent_condition_dt_at_diagonal_is_velocity():
  """∂_t X(s, t, x) at t = s is v(s, s, x): the diagonal of the network is a velocity field."""
  with jax.enable_x64(True):
    params, s, _, x = _setup()
    _, dt = flow_map.X_and_dt(tiny_net, params, s, s, x)
    np.testing.assert_allclose(dt, flow_map.velocity(tiny_net, params, s, x), atol=1e-14)


def test_identity_on_the_diagonal_exactly():
  config = config_io.load('configs/lsd_checkerboard.py')
  config.model.mlp.width, config.model.mlp.depth = 32, 2
  net = models.get(config.model, sigma=(1.3, 0.7))
  s = jax.random.uniform(jax.random.key(0), (64,))
  x = 5 * jax.random.normal(jax.random.key(1), (64, 2))
  params = net.init(jax.random.key(2), s, s, x)['params']
  apply_fn = lambda p, s_, t_, x_, y=None: net.apply({'params': p}, s_, t_, x_)
  assert jnp.array_equal(flow_map.X(apply_fn, params, s, s, x), x)


def test_jvp_needs_a_tangent():
  params, s, t, x = _setup()
  with pytest.raises(ValueError, match='tangent'):
    flow_map.jvp(tiny_net, params, s, t, x)
