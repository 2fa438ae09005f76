"""2-D sample quality (docs/metrics.md): histogram KL(p_data ‖ p_model) and the energy distance.

KL: both sample sets binned on a 100 × 100 grid over [-4.5, 4.5]², every bin's count + 1 (Laplace
smoothing) on both sides, normalised; samples outside the grid are dropped (they are rare for data
as generated). The floor is the same estimator between two independent data sets.
"""
import jax
import jax.numpy as jnp
import numpy as np

BINS = 100
LIMIT = 4.5


def histogram(x, bins=BINS, limit=LIMIT):
  """Counts of 2-D points on a bins × bins grid over [-limit, limit]², on device."""
  x = jnp.asarray(x, jnp.float32)
  idx = jnp.floor((x + limit) / (2 * limit) * bins).astype(jnp.int32)
  inside = jnp.all((idx >= 0) & (idx < bins), axis=-1)
  flat = jnp.where(inside, idx[:, 0] * bins + idx[:, 1], bins * bins)
  return jnp.bincount(flat, length=bins * bins + 1)[:-1].reshape(bins, bins)


def kl_from_histograms(h_data, h_model):
  p = np.asarray(h_data, np.float64) + 1.0
  q = np.asarray(h_model, np.float64) + 1.0
  p, q = p / p.sum(), q / q.sum()
  return float(np.sum(p * np.log(p / q)))


def kl(data, model):
  """KL(p_data ‖ p_model) between two sample sets (N × 2 each)."""
  return kl_from_histograms(histogram(data), histogram(model))


@jax.jit
def _mean_pairwise_distance(a, b):
  """E‖a − b'‖ over all pairs, in row blocks so memory stays O(block · N)."""
  block = 1000
  a = a.reshape(-1, block, a.shape[-1])

  def row(carry, a_blk):
    sq = (jnp.sum(a_blk ** 2, -1)[:, None] + jnp.sum(b ** 2, -1)[None]
          - 2 * a_blk @ b.T)
    d = jnp.sqrt(jnp.maximum(sq, 0.0))
    return carry + jnp.sum(d), None

  total, _ = jax.lax.scan(row, jnp.zeros((), jnp.float32), a)
  return total / (a.shape[0] * block * b.shape[0])


def energy_distance(x, y):
  """2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ (V-statistic), sizes multiples of 1000."""
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  return float(2 * _mean_pairwise_distance(x, y) - _mean_pairwise_distance(x, x)
               - _mean_pairwise_distance(y, y))
