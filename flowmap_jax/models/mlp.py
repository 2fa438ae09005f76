"""MLP average velocity v_θ(s, t, x) for 2-D data: input [Fourier(s), Fourier(t − s), x/σ]."""
from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from flowmap_jax.models.embeddings import fourier

ACTIVATIONS = {'gelu': nn.gelu, 'silu': nn.silu, 'relu': nn.relu, 'tanh': nn.tanh}


class MLP(nn.Module):
  """`depth` hidden layers of `width`; inputs and outputs scaled by σ (the base noise scale), so the
  network works at unit scale whatever the data's."""
  width: int = 512
  depth: int = 4
  activation: str = 'gelu'
  num_fourier: int = 8
  max_freq: float = 32.0
  sigma: Union[float, Sequence[float]] = 1.0

  @nn.compact
  def __call__(self, s, t, x, y=None, train=False):
    del train  # no dropout
    if y is not None:
      raise ValueError('The MLP is unconditional: set data.class_conditional=False.')
    sigma = jnp.asarray(self.sigma, x.dtype)
    act = ACTIVATIONS[self.activation]
    h = jnp.concatenate([fourier(s, self.num_fourier, self.max_freq),
                         fourier(t - s, self.num_fourier, self.max_freq),
                         x / sigma], axis=-1)
    for _ in range(self.depth):
      h = act(nn.Dense(self.width)(h))
    return sigma * nn.Dense(x.shape[-1])(h)
