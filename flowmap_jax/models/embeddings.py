"""Time embeddings shared by the networks: the model sees (s, t − s), both embedded: by our Fourier
features (`TwoTimeEmbedding`), or by SiT's timestep embedder (`SiTTimeEmbedding`, docs/sit.md)."""
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

# model.dit.time_embedding: 'fourier' (ours, TwoTimeEmbedding), 'sit' (SiTTimeEmbedding).
TIME_EMBEDDINGS = ('fourier', 'sit')


def fourier(t, num: int, max_freq: float):
  """[t, sin(ω_k t), cos(ω_k t)] with ω_k geometric in [1, max_freq]·π, k < num. t: (B,) -> (B, 2num+1).

  Fixed (not learned) frequencies keep ∂/∂t of the embedding bounded and the jvp exact.
  """
  freqs = jnp.pi * jnp.geomspace(1.0, max_freq, num, dtype=t.dtype)
  angles = t[:, None] * freqs
  return jnp.concatenate([t[:, None], jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TwoTimeEmbedding(nn.Module):
  """Embeds (s, t − s) into one conditioning vector of size `dim` (Fourier features + MLP: Dense,
  SiLU, Dense, the shape of DiT's and EDM's timestep MLPs)."""
  dim: int
  num: int = 16
  max_freq: float = 100.0
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, s, t):
    e = jnp.concatenate([fourier(s, self.num, self.max_freq),
                         fourier(t - s, self.num, self.max_freq)], axis=-1)
    e = nn.Dense(self.dim, kernel_init=self.kernel_init)(e)
    return nn.Dense(self.dim, kernel_init=self.kernel_init)(nn.silu(e))


def sinusoidal(t, dim: int = 256, max_period: float = 10000.0):
  """[cos(ω_k t), sin(ω_k t)], ω_k = max_period^(−k/half), k < half = dim/2: GLIDE's timestep
  features as SiT's (and DiT's) `TimestepEmbedder.timestep_embedding` computes them. SiT feeds its
  t ∈ [0, 1] unscaled (DiT fed integer steps). t: (B,) -> (B, dim), dim even."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=t.dtype) / half)
  angles = t[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TimestepEmbedder(nn.Module):
  """SiT's `TimestepEmbedder`: `sinusoidal` features, Dense, SiLU, Dense (its mlp.0 and mlp.2)."""
  dim: int
  kernel_init: Callable = nn.initializers.normal(0.02)
  last_init: Callable = nn.initializers.normal(0.02)
  frequencies: int = 256

  @nn.compact
  def __call__(self, t):
    e = nn.Dense(self.dim, kernel_init=self.kernel_init)(sinusoidal(t, self.frequencies))
    return nn.Dense(self.dim, kernel_init=self.last_init)(nn.silu(e))


class SiTTimeEmbedding(nn.Module):
  """SiT's timestep embedder on s plus a second one on t − s whose last layer (kernel and bias)
  starts at zero: the network is SiT's v(s, x) for every t until the second one learns, so
  v_θ(s, s, x) of SiT's converted weights is SiT's velocity and a student starts as its teacher
  (docs/sit.md)."""
  dim: int
  kernel_init: Callable = nn.initializers.normal(0.02)

  @nn.compact
  def __call__(self, s, t):
    e_s = TimestepEmbedder(self.dim, self.kernel_init, self.kernel_init, name='embed_s')(s)
    e_dt = TimestepEmbedder(self.dim, self.kernel_init, nn.initializers.zeros,
                            name='embed_t_minus_s')(t - s)
    return e_s + e_dt
