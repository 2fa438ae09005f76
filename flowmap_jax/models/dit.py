"""DiT (Peebles & Xie 2023; facebookresearch/DiT `models.py`) for v_θ(s, t, x | y): patchify,
transformer blocks with adaLN-zero conditioning on (s, t − s) and the label, unpatchify. Sizes S/B/L/XL
by name (`SIZES`).

The reference network and its initialisation (xavier-uniform linears and patch embedding, normal(0.02)
time MLP and label table, zero adaLN and output layers), with three deliberate differences: the
timestep embedding is ours, Fourier features of (s, t − s) (`TwoTimeEmbedding`, the same MLP
shape); the input is divided by σ0 and the output multiplied by it; and there is no learned-σ half
of the output. tests/test_parity.py checks the forward pass against the reference's own code.
With `time_embedding='sit'` the timestep embedding is SiT's (willisma/SiT, the same network trained
as a flow) on s, plus a second one on t − s that starts at zero: the network SiT's converted
weights run (docs/sit.md; tests/test_sit.py checks it against SiT's own code).
Two options leave the reference's network as it is when off: `attention` (how the blocks compute it,
models/attention.py) and `qk_norm`, RMSNorm on each head's queries and keys (docs/attention.md §5).
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from flowmap_jax.models.attention import attention
from flowmap_jax.models.layers import cast, conditioning, remat_block

xavier = nn.initializers.xavier_uniform()
normal002 = nn.initializers.normal(0.02)

# name: (hidden width, depth, heads), as in the DiT paper; 'T' (tiny) is ours, for smoke runs.
SIZES = {'T': (64, 2, 2), 'XS': (192, 6, 3), 'S': (384, 12, 6), 'B': (768, 12, 12), 'L': (1024, 24, 16),
         'XL': (1152, 28, 16)}


def sincos_2d(grid: int, dim: int):
  """Fixed 2-D sine-cosine position embedding of a grid × grid patch layout: (grid², dim)."""
  def one_axis(pos, d):
    omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
    angles = pos[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  yy, xx = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                       indexing='ij')
  # The column coordinate's half first, as DiT's (MAE's) get_2d_sincos_pos_embed orders them.
  return np.concatenate([one_axis(xx.ravel(), dim // 2), one_axis(yy.ravel(), dim // 2)], axis=1)


def layer_norm(dtype):
  """Affine-free LayerNorm (adaLN supplies scale and shift); float32 statistics under mixed
  precision, else the inputs' dtype."""
  return nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, dtype=dtype,
                      force_float32_reductions=dtype is not None)


def rms_norm(dtype, name):
  """RMSNorm over each head's channels with a learned scale (QK-normalisation); float32 statistics
  under mixed precision, else the inputs' dtype."""
  return nn.RMSNorm(epsilon=1e-6, dtype=dtype, force_float32_reductions=dtype is not None,
                    name=name)


def modulate(x, shift, scale):
  return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
  width: int
  heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  dtype: Optional[jnp.dtype] = None
  attention: str = 'xla'   # models.ATTENTIONS
  qk_norm: bool = False

  @nn.compact
  def __call__(self, x, c, train):
    B, N, D = x.shape
    mod = nn.Dense(6 * D, dtype=self.dtype, kernel_init=nn.initializers.zeros)(c)
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
    ln = lambda: layer_norm(self.dtype)
    h = modulate(ln()(x), shift1, scale1)
    dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=xavier)
    qkv = dense(3 * D)(h).reshape(B, N, 3, self.heads, D // self.heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.qk_norm:  # docs/attention.md §5: bounded logits, and so bounded logit tangents
      q, k = rms_norm(self.dtype, 'q_norm')(q), rms_norm(self.dtype, 'k_norm')(k)
    h = attention(q, k, v, self.attention).reshape(B, N, D)
    x = x + gate1[:, None] * dense(D)(h)
    h = modulate(ln()(x), shift2, scale2)
    h = nn.gelu(dense(int(D * self.mlp_ratio))(h), approximate=True)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return x + gate2[:, None] * dense(D)(h)


class DiT(nn.Module):
  """Inputs and outputs scaled by σ0; the last layer and every gate start at zero (adaLN-zero)."""
  size: str = 'S'
  patch_size: int = 2
  dropout: float = 0.0
  num_classes: int = 0
  num_fourier: int = 16
  max_freq: float = 32.0
  sigma: float = 0.5
  dtype: Optional[jnp.dtype] = None
  remat: str = 'none'   # models.REMAT: recompute each DiTBlock in the backward pass
  attention: str = 'xla'   # models.ATTENTIONS: how the blocks compute attention (the same function)
  qk_norm: bool = False    # RMSNorm on each head's queries and keys (new parameters q_norm, k_norm)
  time_embedding: str = 'fourier'   # models.TIME_EMBEDDINGS: ours, or SiT's (layers.conditioning)

  @nn.compact
  def __call__(self, s, t, x, y=None, train=False):
    width, depth, heads = SIZES[self.size]
    B, H, W, C = x.shape
    p = self.patch_size
    c = conditioning(self, s, t, y, width, kernel_init=normal002, embed_init=normal002)
    # The patch embedding initialised as the linear map it is: fans p·p·C and width.
    patch_init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                                  out_axis=-1)
    h = nn.Conv(width, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                kernel_init=patch_init)(cast(x / self.sigma, self.dtype))
    grid = H // p
    h = h.reshape(B, grid * grid, width) + jnp.asarray(sincos_2d(grid, width), h.dtype)
    Block = remat_block(DiTBlock, self.remat)
    for i in range(depth):  # named, so the parameter tree does not depend on model.remat
      h = Block(width, heads, dropout=self.dropout, dtype=self.dtype, attention=self.attention,
                qk_norm=self.qk_norm, name=f'DiTBlock_{i}')(h, c, train)
    shift, scale = jnp.split(nn.Dense(2 * width, dtype=self.dtype,
                                      kernel_init=nn.initializers.zeros)(c), 2, axis=-1)
    h = modulate(layer_norm(self.dtype)(h), shift, scale)
    h = nn.Dense(p * p * C, dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    v = h.reshape(B, grid, grid, p, p, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
    return (self.sigma * v).astype(x.dtype)
