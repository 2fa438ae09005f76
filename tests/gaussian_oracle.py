"""The exact Gaussian-to-Gaussian flow map (docs/oracle.md), as a 'network' with parameters.

x0 ~ N(0, σ0² I), x1 ~ N(μ, σ1² I), linear interpolant: σ_t² = (1 − t)² σ0² + t² σ1²,
X_{s,t}(x) = tμ + (σ_t/σ_s)(x − sμ), b_t(x) = μ + (σ_t'/σ_t)(x − tμ).
"""
import jax
import jax.numpy as jnp


def sigma_t(params, t):
  a, c = params['sigma0'] ** 2, params['sigma1'] ** 2
  return jnp.sqrt((1 - t) ** 2 * a + t ** 2 * c)


def average_velocity(params, s, t, x, y=None):
  """v(s, t, x) = (X_{s,t}(x) − x)/(t − s) = μ + K(s, t)(x − sμ), with
  K = (σ_t − σ_s)/((t − s) σ_s) = [a(t + s − 2) + c(t + s)] / ((σ_t + σ_s) σ_s): smooth at s = t,
  where it is the velocity σ_s'/σ_s. An optional `eps` distorts it into a map that is no flow map.
  (Unconditional: the labels y are ignored.)"""
  del y
  a, c = params['sigma0'] ** 2, params['sigma1'] ** 2
  sig_s, sig_t = sigma_t(params, s), sigma_t(params, t)
  K = (a * (t + s - 2) + c * (t + s)) / ((sig_t + sig_s) * sig_s)
  v = params['mu'] + K[:, None] * (x - s[:, None] * params['mu'])
  eps = params.get('eps', 0.0)
  return v * (1 + eps * jnp.cos(3 * (t - s) + s))[:, None] + eps * jnp.tanh(x + t[:, None])


def exact_map(params, s, t, x):
  return t[:, None] * params['mu'] + (sigma_t(params, t) / sigma_t(params, s))[:, None] * (
      x - s[:, None] * params['mu'])


def make(mu, sigma0, sigma1, dtype=jnp.float64):
  return {'mu': jnp.asarray(mu, dtype), 'sigma0': jnp.asarray(sigma0, dtype),
          'sigma1': jnp.asarray(sigma1, dtype)}


def perturb(params, rel=0.05):
  """About 5 % off: μ and σ1 scaled, and a distortion that breaks the semigroup property, so even
  the self-consistency terms see it."""
  p = dict(params)
  p['mu'] = params['mu'] * (1 + rel) + rel
  p['sigma1'] = params['sigma1'] * (1 + rel)
  p['eps'] = jnp.asarray(rel, params['mu'].dtype)
  return p


def teacher(params):
  """b_t(x) = v(t, t, x) of the true parameters."""
  return lambda t, x, y=None: average_velocity(params, t, t, x)


def sample(rng, params, n):
  k0, k1 = jax.random.split(rng)
  d = params['mu'].shape[0]
  dtype = params['mu'].dtype
  x0 = params['sigma0'] * jax.random.normal(k0, (n, d), dtype)
  x1 = params['mu'] + params['sigma1'] * jax.random.normal(k1, (n, d), dtype)
  return x0, x1


def misfit(params):
  """μ and σ1 about 5 % off, with no distortion: still a Gaussian flow map, of the wrong Gaussian."""
  return dict(params, mu=params['mu'] * 1.05 + 0.05, sigma1=params['sigma1'] * 1.05)


def expected_gradient_norms(loss_fn, case, n, config, **kwargs):
  """‖∇ loss‖ over `n` draws at the exact map of `case` and at its `misfit`, in float64: a loss
  whose fixed point is the exact map has the first ≪ the second (zero in expectation)."""
  with jax.enable_x64(True):
    truth = make(*case)
    x0, x1 = sample(jax.random.key(0), truth, n)
    grad_norm = lambda p: jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(jax.grad(
        lambda q: loss_fn(average_velocity, q, x0, x1, jax.random.key(1), config=config,
                          **kwargs)[0])(p))))
    return float(grad_norm(truth)), float(grad_norm(misfit(truth)))
