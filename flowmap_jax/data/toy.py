"""2-D data sets generated on device from a key (no files, no host work).

`sample(name, rng, n) -> (n, 2)` float32. The checkerboard is the RealNVP-style one of Boffi et al.:
x1 ~ U[-2, 2), x2 ~ U[0, 1) − 2·Bernoulli(1/2) + (floor(x1) mod 2), both scaled by 2.
"""
import jax
import jax.numpy as jnp
import numpy as np


def checkerboard(rng, n):
  k1, k2, k3 = jax.random.split(rng, 3)
  x1 = jax.random.uniform(k1, (n,), minval=-2.0, maxval=2.0)
  x2 = (jax.random.uniform(k2, (n,)) - 2.0 * jax.random.bernoulli(k3, 0.5, (n,))
        + jnp.mod(jnp.floor(x1), 2.0))
  return 2.0 * jnp.stack([x1, x2], axis=-1)


def eight_gaussians(rng, n, radius=3.0, std=0.25):
  k1, k2 = jax.random.split(rng)
  angle = jax.random.randint(k1, (n,), 0, 8) * (2 * jnp.pi / 8)
  centers = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
  return centers + std * jax.random.normal(k2, (n, 2))


def two_moons(rng, n, noise=0.08):
  k1, k2, k3 = jax.random.split(rng, 3)
  theta = jnp.pi * jax.random.uniform(k1, (n,))
  upper = jax.random.bernoulli(k2, 0.5, (n,))
  x = jnp.where(upper, jnp.cos(theta), 1.0 - jnp.cos(theta))
  y = jnp.where(upper, jnp.sin(theta), 0.5 - jnp.sin(theta))
  pts = 2.0 * (jnp.stack([x, y], axis=-1) - jnp.array([0.5, 0.25]))
  return pts + noise * 2.0 * jax.random.normal(k3, (n, 2))


def spirals(rng, n, noise=0.1):
  """Two interleaved Archimedean spirals within radius 4."""
  k1, k2, k3 = jax.random.split(rng, 3)
  r = jnp.sqrt(jax.random.uniform(k1, (n,)))
  theta = 3 * jnp.pi * r + jnp.pi * jax.random.bernoulli(k2, 0.5, (n,))
  pts = 4.0 * r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
  return pts + noise * jax.random.normal(k3, (n, 2))


DATASETS = {'checkerboard': checkerboard, 'eight_gaussians': eight_gaussians,
            'two_moons': two_moons, 'spirals': spirals}


def sample(name, rng, n):
  if name not in DATASETS:
    raise ValueError(f'Unknown 2-D data set {name!r}; known: {sorted(DATASETS)}.')
  return DATASETS[name](rng, n)


def data_std(name, n=200_000, seed=1234):
  """Per-axis std of the data set, from a fixed sample: σ0 'adaptive' (docs/conventions.md §1)."""
  return tuple(float(v) for v in np.asarray(jnp.std(sample(name, jax.random.key(seed), n), axis=0)))


def sigma0(data_config):
  """σ0 as a float or per-axis tuple: the config's float, or the data std when 'adaptive'."""
  if data_config.sigma0 == 'adaptive':
    return data_std(data_config.name)
  return float(data_config.sigma0)
