import jax
import jax.numpy as jnp
import pytest

from flowmap_jax import time_sampling


@pytest.mark.parametrize('frac', [0.0, 0.25, 0.75, 1.0])
@pytest.mark.parametrize('sampler', ['uniform', 'logit_normal'])
def test_diag_fraction_and_ordering(loss_config, frac, sampler):
  c = loss_config
  c.diag_fraction, c.time_sampler = frac, sampler
  c.time_min, c.time_max = 0.1, 0.9
  s, t, n_diag = time_sampling.sample_st(jax.random.key(0), 4096, c)
  assert n_diag == round(frac * 4096)
  assert jnp.all(s[:n_diag] == t[:n_diag])
  assert jnp.all(s[n_diag:] < t[n_diag:])
  assert jnp.all(s >= 0.1) and jnp.all(t <= 0.9 + 1e-6)
  if 0 < n_diag < 4096:
    # Off-diagonal pairs cover the time range, not a corner of it.
    assert float(jnp.min(s[n_diag:])) < 0.2 and float(jnp.max(t[n_diag:])) > 0.8


@pytest.mark.parametrize('mode', time_sampling.ITVM_U)
@pytest.mark.parametrize('tau', [0.01, 0.3, 1.0])
def test_itvm_u_in_s_t(mode, tau):
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  a, b = jax.random.uniform(k1, (20000,)), jax.random.uniform(k2, (20000,))
  s, t = jnp.minimum(a, b), jnp.maximum(a, b) + 1e-3
  u = time_sampling.sample_u(k3, s, t, mode, tau)
  assert jnp.all(u >= s) and jnp.all(u < t)
  if mode == 't_minus_tau':
    assert jnp.allclose(u, jnp.maximum(s, t - tau))


def test_unknown_modes_fail_clearly(loss_config):
  loss_config.time_sampler = 'beta'
  with pytest.raises(ValueError, match='time_sampler'):
    time_sampling.sample_st(jax.random.key(0), 8, loss_config)
  with pytest.raises(ValueError, match='itvm.u'):
    time_sampling.sample_u(jax.random.key(0), jnp.zeros(3), jnp.ones(3), 'middle', 0.1)


@pytest.mark.parametrize('sampler,low,high', [('uniform', 0.45, 0.55), ('logit_normal', 0.8, 0.9)])
def test_flow_matching_draws_its_times_from_the_configured_sampler(loss_config, sampler, low, high):
  """A logit-normal FM teacher trains on logit-normal times (sigmoid(N(2, 1)) has mean ≈ 0.85)."""
  from flowmap_jax import losses  # pylint: disable=g-import-not-at-top
  c = loss_config
  c.time_sampler, c.logit_mean, c.logit_std = sampler, 2.0, 1.0
  seen = []

  def probe(params, s, t, x, y=None):
    seen.append((s, t))
    return jnp.zeros_like(x)

  x = jnp.zeros((8192, 2))
  losses.get('fm')(probe, {}, x, x, jax.random.key(0), config=c)
  (s, t), = seen
  assert jnp.array_equal(s, t) and low < float(jnp.mean(t)) < high
