"""w_φ(s, t): the learned loss weighting's network (docs/losses.md §9).

A small MLP of the two times, as EDM2's uncertainty weight is one of the noise level: Fourier features of
s and t − s, one SiLU hidden layer, a scalar. The output layer starts at zero, so w = 0 and the weighted
loss exp(−w)·ℓ + w equals the plain loss at initialisation.
"""
import flax.linen as nn
import jax.numpy as jnp

from flowmap_jax.models.embeddings import fourier


class LossWeighting(nn.Module):
  num_fourier: int = 16
  max_freq: float = 16.0
  hidden: int = 128

  @nn.compact
  def __call__(self, s, t):
    s, t = s.astype(jnp.float32), t.astype(jnp.float32)
    h = jnp.concatenate([fourier(s, self.num_fourier, self.max_freq),
                         fourier(t - s, self.num_fourier, self.max_freq)], axis=-1)
    h = nn.silu(nn.Dense(self.hidden)(h))
    return nn.Dense(1, kernel_init=nn.initializers.zeros)(h)[:, 0]
