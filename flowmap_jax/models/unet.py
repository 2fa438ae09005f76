"""A U-Net in the style of DDPM++ (Song et al. 2021, as configured in EDM, Karras et al. 2022) for
v_θ(s, t, x | y).

The configs give it the sizes of EDM's DDPM++ configurations (CIFAR-10: 128 channels, multipliers
[2, 2, 2], 4 blocks per resolution, attention at 16×16, dropout 0.13, the self-distillation paper's
settings), but it is not EDM's SongUNet layer for layer: the embedding acts as GroupNorm scale and
shift (SongUNet's DDPM++ adds it), attention has C/64 heads (SongUNet: one) and runs in every
decoder block at the attention resolutions, and the label embedding is added after the time MLP.
Conditioning is on (s, t − s) through `TwoTimeEmbedding`, plus an optional class label (index
`num_classes` is the "no label" class that classifier-free guidance drops labels to), applied as
adaptive GroupNorm scale and shift in every residual block. Attention is plain XLA (einsum and
softmax), so `jax.jvp` differentiates through it.
"""
import itertools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowmap_jax.models.embeddings import TwoTimeEmbedding

# Rematerialisation of each residual/transformer block (`jax.checkpoint` through `nn.remat`): the
# backward pass (and the jvp's backward) recomputes a block's activations instead of keeping them.
# 'full' keeps only each block's inputs; 'dots' also keeps matmul outputs without batch dimensions
# (weights-only products), the usual transformer compromise; 'none' keeps everything.
REMAT = {'none': None, 'full': jax.checkpoint_policies.nothing_saveable,
         'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_block(block, remat):
  """`block` (a Module class called as (x, emb, train)) under `jax.checkpoint` with the named policy
  of `REMAT` ('none': unchanged). `train` (argument 3, counting self) stays static. Callers name
  the blocks, since the wrapper's class name would otherwise rename their parameters."""
  if remat == 'none':
    return block
  return nn.remat(block, static_argnums=(3,), policy=REMAT[remat])


def attention(q, k, v):
  """Softmax attention over the token axis; q, k, v: (B, N, heads, d). Logits in at least float32
  (bfloat16 activations), float64 where the inputs are."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / jnp.sqrt(q.shape[-1])
  weights = nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


class AttentionBlock(nn.Module):
  head_channels: int = 64
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    heads = max(1, C // self.head_channels)
    h = group_norm(C, self.dtype)(x)
    qkv = nn.Dense(3 * C, dtype=self.dtype)(h).reshape(B, H * W, 3, heads, C // heads)
    out = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(B, H, W, C)
    out = nn.Dense(C, dtype=self.dtype, kernel_init=nn.initializers.zeros)(out)
    return (x + out) * (1 / jnp.sqrt(2.0)).astype(x.dtype)


class ResBlock(nn.Module):
  """GroupNorm → SiLU → conv, adaptive scale/shift from the embedding, dropout, conv; a 1×1 skip
  when the width or resolution changes; the sum scaled by 1/√2 (DDPM++)."""
  channels: int
  resample: Optional[str] = None   # None | 'down' | 'up'
  dropout: float = 0.0
  attn: bool = False
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x, emb, train):
    def resample(h):
      if self.resample == 'down':
        return nn.avg_pool(h, (2, 2), (2, 2))
      if self.resample == 'up':
        return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      return h

    C_in = x.shape[-1]
    h = nn.silu(group_norm(C_in, self.dtype)(x))
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(resample(h))
    scale, shift = jnp.split(nn.Dense(2 * self.channels, dtype=self.dtype)(emb), 2, axis=-1)
    h = group_norm(self.channels, self.dtype)(h)
    h = nn.silu(h * (1 + scale[:, None, None]) + shift[:, None, None])
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    skip = resample(x)
    if C_in != self.channels or self.resample:
      skip = nn.Conv(self.channels, (1, 1), dtype=self.dtype)(skip)
    x = (h + skip) * (1 / jnp.sqrt(2.0)).astype(h.dtype)
    return AttentionBlock(dtype=self.dtype)(x) if self.attn else x


class UNet(nn.Module):
  """v_θ(s, t, x | y) for images (B, H, W, C); inputs and outputs scaled by σ0 like the MLP."""
  channels: int = 128
  channel_mult: Sequence[int] = (2, 2, 2)
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.0
  num_classes: int = 0             # 0: unconditional
  num_fourier: int = 16
  max_freq: float = 32.0
  sigma: float = 0.5
  dtype: Optional[jnp.dtype] = None  # activations (bfloat16: mixed precision); params stay float32
  remat: str = 'none'              # models.REMAT: recompute each ResBlock in the backward pass

  @nn.compact
  def __call__(self, s, t, x, y=None, train=False):
    out_dtype = x.dtype
    emb = conditioning(self, s, t, y, 4 * self.channels)
    res = x.shape[1]
    h = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(cast(x / self.sigma, self.dtype))
    Block, count = remat_block(ResBlock, self.remat), itertools.count()
    # Explicit names: the parameter tree stays the same whatever model.remat says.
    block = lambda c, **kw: Block(c, dropout=self.dropout, dtype=self.dtype,
                                  name=f'ResBlock_{next(count)}', **kw)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      if level > 0:
        h = block(h.shape[-1], resample='down')(h, emb, train)
        skips.append(h)
      for _ in range(self.num_blocks):
        h = block(self.channels * mult, attn=(res >> level) in self.attn_resolutions)(h, emb, train)
        skips.append(h)
    h = block(h.shape[-1], attn=True)(h, emb, train)
    h = block(h.shape[-1])(h, emb, train)
    for level in reversed(range(len(self.channel_mult))):
      if level < len(self.channel_mult) - 1:
        h = block(h.shape[-1], resample='up')(h, emb, train)
      for _ in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.channels * self.channel_mult[level],
                  attn=(res >> level) in self.attn_resolutions)(h, emb, train)
    h = nn.silu(group_norm(h.shape[-1], self.dtype)(h))
    v = nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    return (self.sigma * v).astype(out_dtype)


def conditioning(module, s, t, y, dim, kernel_init=nn.initializers.lecun_normal(),
                 embed_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)):
  """The conditioning vector silu(emb(s, t − s) + emb(y)): the label y of a class-conditional network
  through an embedding table with one extra row (the dropped label of classifier-free guidance).
  `kernel_init` and `embed_init` initialise the time MLP and the table."""
  emb = TwoTimeEmbedding(dim, num=module.num_fourier, max_freq=module.max_freq,
                         kernel_init=kernel_init, name='time_embedding')(s, t)
  if module.num_classes:
    if y is None:
      raise ValueError(f'{type(module).__name__} is class-conditional (num_classes='
                       f'{module.num_classes}) but got no labels y.')
    emb = emb + nn.Embed(module.num_classes + 1, dim, embedding_init=embed_init,
                         name='label_embedding')(y)
  return cast(nn.silu(emb), module.dtype)


def group_norm(channels, dtype):
  """GroupNorm with min(32, C/4) groups; statistics in float32 under mixed precision, else in the
  inputs' dtype (float64 in the derivative tests)."""
  return nn.GroupNorm(num_groups=min(32, channels // 4), epsilon=1e-6, dtype=dtype,
                      force_float32_reductions=dtype is not None)


def cast(x, dtype):
  """x in the activation dtype (None: left as it is)."""
  return x if dtype is None else x.astype(dtype)
