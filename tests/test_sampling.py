"""Samplers on the Gaussian oracle, whose exact flow map X_{0,1} is known in closed form."""
import jax
import jax.numpy as jnp
import numpy as np

import gaussian_oracle as go
from flowmap_jax import sampling


def _setup():
  truth = go.make([1.0, -2.0], 1.0, 0.3)
  x0, _ = go.sample(jax.random.key(0), truth, 256)
  ones = jnp.ones((x0.shape[0],))
  exact = go.exact_map(truth, 0 * ones, ones, x0)
  return truth, x0, exact


def test_flow_map_sampler_is_exact_for_the_exact_map_at_any_step_count():
  with jax.enable_x64(True):
    truth, x0, exact = _setup()
    for n in (1, 2, 8):
      x = sampling.flow_map_sample(go.average_velocity, truth, x0, sampling.uniform_grid(n))
      np.testing.assert_allclose(x, exact, atol=1e-12)


def test_ode_solvers_converge_at_their_order():
  with jax.enable_x64(True):
    truth, x0, exact = _setup()
    v = go.teacher(truth)
    err = lambda x: float(jnp.max(jnp.abs(x - exact)))
    e_euler = [err(sampling.euler(v, x0, n)) for n in (16, 32)]
    e_heun = [err(sampling.heun(v, x0, n)) for n in (16, 32)]
    assert 1.7 < e_euler[0] / e_euler[1] < 2.3, e_euler        # first order
    assert 3.4 < e_heun[0] / e_heun[1] < 4.6, e_heun           # second order
    x, nfe = sampling.adaptive(v, x0, 'tsit5', rtol=1e-8, atol=1e-8)
    assert err(x) < 1e-6 and nfe > 6


def test_traced_step_count_sampler_matches_the_grid_sampler():
  """One compiled loop for every step count gives the grid sampler's result."""
  with jax.enable_x64(True):
    truth = go.perturb(go.make([1.0, -0.5], 0.8, 0.4))
    x0, _ = go.sample(jax.random.key(0), truth, 64)
    run = jax.jit(lambda n: sampling.uniform_flow_map_sample(go.average_velocity, truth, x0, n))
    for n in (1, 3, 8):
      expected = sampling.flow_map_sample(go.average_velocity, truth, x0, sampling.uniform_grid(n))
      np.testing.assert_allclose(run(n), expected, rtol=1e-12, atol=1e-12)
