"""Time embeddings shared by the networks: the model sees (s, t − s), both embedded."""
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


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
