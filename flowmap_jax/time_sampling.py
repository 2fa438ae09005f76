"""Times for the losses: (s, t) pairs with a diagonal part, and ITVM's intermediate time u.

docs/losses.md §0. The first `num_diag(B, diag_fraction)` examples of a batch are
diagonal (s = t); the rest have s < t. The split is a static count, so the losses slice the batch
instead of masking it (masking would pay for every term on every example).
"""
import jax
import jax.numpy as jnp

# Smallest t - s of an off-diagonal pair, as a fraction of the time range: keeps s < t strict in
# float32, so (t - u) in ITVM never divides by zero.
MIN_GAP = 1e-3

TIME_SAMPLERS = ('uniform', 'logit_normal')
ITVM_U = ('t_minus_tau', 's_plus_tau', 'uniform')


def num_diag(batch_size: int, diag_fraction: float) -> int:
  """Number of diagonal examples in a batch: round(diag_fraction · B)."""
  return int(round(float(diag_fraction) * batch_size))


def _unit(rng, shape, config):
  """Times in [0, 1] from the configured sampler."""
  if config.time_sampler == 'uniform':
    return jax.random.uniform(rng, shape)
  if config.time_sampler == 'logit_normal':
    return jax.nn.sigmoid(config.logit_mean + config.logit_std * jax.random.normal(rng, shape))
  raise ValueError(f'Unknown loss.time_sampler {config.time_sampler!r}; known: {TIME_SAMPLERS}.')


def _scale(r, config):
  return config.time_min + (config.time_max - config.time_min) * r


def sample_t(rng, batch_size: int, config):
  """(B,) times from the configured sampler over [config.time_min, config.time_max] (FM's times)."""
  return _scale(_unit(rng, (batch_size,), config), config)


def sample_st(rng, batch_size: int, config):
  """(s, t, n_diag): s = t for the first n_diag examples, s < t (by at least MIN_GAP) for the rest.

  Off-diagonal pairs are two sorted draws; the time range is [config.time_min, config.time_max].
  """
  n_diag = num_diag(batch_size, config.diag_fraction)
  n_off = batch_size - n_diag
  k_diag, k_off = jax.random.split(rng)
  t_diag = _unit(k_diag, (n_diag,), config)
  pair = jnp.sort(_unit(k_off, (2, n_off), config), axis=0)
  s_off = pair[0] * (1.0 - MIN_GAP)
  t_off = pair[1] * (1.0 - MIN_GAP) + MIN_GAP
  s = _scale(jnp.concatenate([t_diag, s_off]), config)
  t = _scale(jnp.concatenate([t_diag, t_off]), config)
  return s, t, n_diag


def sample_u(rng, s, t, mode: str, tau: float):
  """ITVM's intermediate time u with s <= u < t (docs/itvm.md)."""
  if mode == 't_minus_tau':
    return jnp.maximum(s, t - tau)
  if mode == 's_plus_tau':
    return jnp.where(s + tau < t, s + tau, s)
  if mode == 'uniform':
    # Up to 99% of the way: keeps t - u > 0 in float32.
    return s + jax.random.uniform(rng, s.shape, maxval=0.99) * (t - s)
  raise ValueError(f'Unknown loss.itvm.u {mode!r}; known: {ITVM_U}.')
