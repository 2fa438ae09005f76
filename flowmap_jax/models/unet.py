"""EDM's U-Nets (Karras et al. 2022, NVlabs/edm `training/networks.py`) for v_θ(s, t, x | y).

- `SongUNet`, configured as EDM's DDPM++ (Song et al. 2021): additive embedding, one attention head,
  skip scale 1/√2, box resampling with 1×1 resampling projections, xavier-uniform initialisation.
  With 128 channels ×[2, 2, 2], 4 blocks, attention at 16×16 and dropout 0.13 it is EDM's CIFAR-10
  network, the one the self-distillation paper's CIFAR-10 numbers belong to (`model.name='unet'`).
- `DhariwalUNet`, EDM's ADM (Dhariwal & Nichol 2021): adaptive scale and shift, 64 channels per
  attention head, kaiming-uniform initialisation; with 192 channels ×[1, 2, 3, 4], 3 blocks and
  attention at 32/16/8 it is EDM's ImageNet-64 network (`model.name='adm'`).

Both are the reference layer for layer, initialisation included (tests/test_parity.py compares them
with EDM's own code), except for the one deliberate change: the noise-level embedding is ours,
Fourier features of (s, t − s) mapped by a linear layer to EDM's embedding width
(`time_embedding`), in place of EDM's positional embedding of the noise level; and, as in every
network here, the input is divided by σ0 and the output multiplied by it. A class label y (index
`num_classes`: the dropped label of classifier-free guidance, EDM's zero vector) enters through
EDM's `map_label` on the one-hot label.
"""
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowmap_jax.models.embeddings import fourier
from flowmap_jax.models.attention import attention
from flowmap_jax.models.layers import cast, group_norm, remat_block


def edm_init(mode, fan_in, fan_out, scale):
  """EDM's weight_init(mode, fan_in, fan_out) × scale, for a parameter of any shape."""
  def init(key, shape, dtype=jnp.float32):
    if mode == 'xavier_uniform':
      return math.sqrt(6 / (fan_in + fan_out)) * scale * jax.random.uniform(key, shape, dtype, -1, 1)
    if mode == 'kaiming_uniform':
      return math.sqrt(3 / fan_in) * scale * jax.random.uniform(key, shape, dtype, -1, 1)
    if mode == 'kaiming_normal':
      return math.sqrt(1 / fan_in) * scale * jax.random.normal(key, shape, dtype)
    raise ValueError(f'Unknown init mode {mode!r}.')
  return init


class Linear(nn.Module):
  """EDM's Linear: its weight and bias drawn from the same fans (init_weight, init_bias scales)."""
  features: int
  bias: bool = True
  init_mode: str = 'kaiming_normal'
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    fans = (x.shape[-1], self.features)
    w = self.param('kernel', edm_init(self.init_mode, *fans, self.init_weight),
                   (x.shape[-1], self.features))
    dtype = self.dtype or jnp.result_type(x, w)  # as flax: the activation dtype, else promoted
    y = x.astype(dtype) @ w.astype(dtype)
    if self.bias:
      y = y + self.param('bias', edm_init(self.init_mode, *fans, self.init_bias),
                         (self.features,)).astype(dtype)
    return y


class Conv2d(nn.Module):
  """EDM's Conv2d with resample_filter [1, 1]: 2× nearest upsampling or 2×2 average pooling first,
  then a k×k convolution (k = 0: resampling only). NHWC; kernel (k, k, C_in, C_out)."""
  features: int
  kernel: int
  up: bool = False
  down: bool = False
  bias: bool = True
  init_mode: str = 'kaiming_normal'
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    if self.up:
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if self.down:
      B, H, W, C = x.shape
      x = x.reshape(B, H // 2, 2, W // 2, 2, C).mean(axis=(2, 4))
    if not self.kernel:
      return x
    k, c_in = self.kernel, x.shape[-1]
    fans = (c_in * k * k, self.features * k * k)
    w = self.param('kernel', edm_init(self.init_mode, *fans, self.init_weight),
                   (k, k, c_in, self.features))
    dtype = self.dtype or jnp.result_type(x, w)
    y = jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (1, 1),
                                     [(k // 2, k // 2)] * 2,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.bias:
      y = y + self.param('bias', edm_init(self.init_mode, *fans, self.init_bias),
                         (self.features,)).astype(dtype)
    return y


class UNetBlock(nn.Module):
  """EDM's UNetBlock: GroupNorm, SiLU, conv (resampling first), the embedding added (DDPM++) or as
  scale and shift (ADM), GroupNorm, SiLU, dropout, conv; a skip, the sum scaled by skip_scale;
  then, with attention, multi-head self-attention over the pixels with its own residual."""
  features: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: Optional[int] = None
  channels_per_head: int = 64
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_proj: bool = False
  adaptive_scale: bool = True
  init: tuple = ()          # (init_mode, init_weight, init_bias) of the ordinary layers
  init_zero: tuple = ()     # ... of conv1 and the attention projection
  init_attn: tuple = ()     # ... of the qkv projection
  dtype: Optional[jnp.dtype] = None
  attention_impl: str = 'xla'  # models.ATTENTIONS (`attention` is whether the block has any)

  @nn.compact
  def __call__(self, x, emb, train):
    mk = lambda init: dict(zip(('init_mode', 'init_weight', 'init_bias'), init), dtype=self.dtype)
    C, c_in = self.features, x.shape[-1]
    orig = x
    h = Conv2d(C, 3, self.up, self.down, name='conv0', **mk(self.init))(
        nn.silu(group_norm(c_in, self.dtype, self.eps, name='norm0')(x)))
    params = Linear(C * (2 if self.adaptive_scale else 1), name='affine', **mk(self.init))(emb)
    params = params[:, None, None, :]
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      h = nn.silu(shift + group_norm(C, self.dtype, self.eps, name='norm1')(h) * (scale + 1))
    else:
      h = nn.silu(group_norm(C, self.dtype, self.eps, name='norm1')(h + params))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = Conv2d(C, 3, name='conv1', **mk(self.init_zero))(h)
    if C != c_in or self.up or self.down:
      kernel = 1 if self.resample_proj or C != c_in else 0
      orig = Conv2d(C, kernel, self.up, self.down, name='skip', **mk(self.init))(orig)
    x = (h + orig) * jnp.asarray(self.skip_scale, h.dtype)
    heads = (self.num_heads or C // self.channels_per_head) if self.attention else 0
    if not heads:  # as EDM: fewer channels than one head's means no attention
      return x
    B, H, W, _ = x.shape
    qkv = Conv2d(3 * C, 1, name='qkv', **mk(self.init_attn or self.init))(
        group_norm(C, self.dtype, self.eps, name='norm2')(x))
    # EDM's channel layout: (head, channel within the head, q|k|v).
    qkv = qkv.reshape(B, H * W, heads, C // heads, 3)
    a = attention(qkv[..., 0], qkv[..., 1], qkv[..., 2], self.attention_impl).reshape(B, H, W, C)
    return (Conv2d(C, 1, name='proj', **mk(self.init_zero))(a) + x) * jnp.asarray(
        self.skip_scale, x.dtype)


class _EDMUNet(nn.Module):
  """The encoder/decoder both EDM U-Nets share; subclasses set the block style and the mapping."""
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
  remat: str = 'none'              # models.REMAT: recompute each UNetBlock in the backward pass
  attention: str = 'xla'           # models.ATTENTIONS: how the blocks compute attention

  def time_features(self, s, t, width):
    """Ours: Fourier features of s and t − s, linearly mapped to EDM's noise-embedding width."""
    e = jnp.concatenate([fourier(s, self.num_fourier, self.max_freq),
                         fourier(t - s, self.num_fourier, self.max_freq)], axis=-1)
    return Linear(width, init_mode='xavier_uniform', name='time_embedding')(e)

  def one_hot(self, y):
    if y is None:
      raise ValueError(f'{type(self).__name__} is class-conditional (num_classes='
                       f'{self.num_classes}) but got no labels y.')
    return jax.nn.one_hot(y, self.num_classes)  # the null label num_classes: all zeros

  def unet(self, x, emb, train, block_kwargs, first_channels, song):
    """EDM's encoder and decoder (names as EDM's enc/dec keys), returning the last features."""
    Block = remat_block(UNetBlock, self.remat)
    block = lambda name, features, **kw: Block(features, name=name, attention_impl=self.attention,
                                               **block_kwargs, **kw)
    res0 = x.shape[1]
    skips = []
    h = x
    for level, mult in enumerate(self.channel_mult):
      res = res0 >> level
      if level == 0:
        h = Conv2d(first_channels, 3, name=f'enc_{res}x{res}_conv', init_mode=block_kwargs['init'][0],
                   init_weight=block_kwargs['init'][1], init_bias=block_kwargs['init'][2],
                   dtype=self.dtype)(h)
      else:
        h = block(f'enc_{res}x{res}_down', h.shape[-1], down=True)(h, emb, train)
      skips.append(h)
      for idx in range(self.num_blocks):
        h = block(f'enc_{res}x{res}_block{idx}', self.channels * mult,
                  attention=res in self.attn_resolutions)(h, emb, train)
        skips.append(h)
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = res0 >> level
      if level == len(self.channel_mult) - 1:
        h = block(f'dec_{res}x{res}_in0', h.shape[-1], attention=True)(h, emb, train)
        h = block(f'dec_{res}x{res}_in1', h.shape[-1])(h, emb, train)
      else:
        h = block(f'dec_{res}x{res}_up', h.shape[-1], up=True)(h, emb, train)
      for idx in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        attn = res in self.attn_resolutions and (idx == self.num_blocks or not song)
        h = block(f'dec_{res}x{res}_block{idx}', self.channels * mult, attention=attn)(
            h, emb, train)
    return h


class SongUNet(_EDMUNet):
  """EDM's SongUNet as DDPM++: v_θ(s, t, x | y) for images (B, H, W, C)."""

  @nn.compact
  def __call__(self, s, t, x, y=None, train=False):
    out_dtype, c = x.dtype, self.channels
    xavier = ('xavier_uniform', 1.0, 0.0)
    emb = self.time_features(s, t, c)                         # EDM: map_noise (positional)
    if self.num_classes:
      emb = emb + Linear(c, init_mode='xavier_uniform', name='map_label')(
          self.one_hot(y) * math.sqrt(self.num_classes))
    emb = nn.silu(Linear(4 * c, init_mode='xavier_uniform', name='map_layer0')(emb))
    emb = cast(nn.silu(Linear(4 * c, init_mode='xavier_uniform', name='map_layer1')(emb)),
               self.dtype)
    block_kwargs = dict(num_heads=1, dropout=self.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                        resample_proj=True, adaptive_scale=False, init=xavier,
                        init_zero=('xavier_uniform', 1e-5, 0.0),
                        init_attn=('xavier_uniform', math.sqrt(0.2), 0.0), dtype=self.dtype)
    h = self.unet(cast(x / self.sigma, self.dtype), emb, train, block_kwargs, c, song=True)
    res = x.shape[1]
    h = nn.silu(group_norm(h.shape[-1], self.dtype, 1e-6, name=f'dec_{res}x{res}_aux_norm')(h))
    v = Conv2d(x.shape[-1], 3, name=f'dec_{res}x{res}_aux_conv', init_mode='xavier_uniform',
               init_weight=1e-5, dtype=self.dtype)(h)
    return (self.sigma * v).astype(out_dtype)


class DhariwalUNet(_EDMUNet):
  """EDM's DhariwalUNet (ADM): v_θ(s, t, x | y) for images (B, H, W, C)."""
  channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)

  @nn.compact
  def __call__(self, s, t, x, y=None, train=False):
    out_dtype, c = x.dtype, self.channels
    init = ('kaiming_uniform', math.sqrt(1 / 3), math.sqrt(1 / 3))
    lin = lambda n, name: Linear(n, init_mode=init[0], init_weight=init[1], init_bias=init[2],
                                 name=name)
    emb = self.time_features(s, t, c)                         # EDM: map_noise (positional)
    emb = lin(4 * c, 'map_layer1')(nn.silu(lin(4 * c, 'map_layer0')(emb)))
    if self.num_classes:
      emb = emb + Linear(4 * c, bias=False, init_mode='kaiming_normal',
                         init_weight=math.sqrt(self.num_classes), name='map_label')(self.one_hot(y))
    emb = cast(nn.silu(emb), self.dtype)
    block_kwargs = dict(channels_per_head=64, dropout=self.dropout, init=init,
                        init_zero=('kaiming_uniform', 0.0, 0.0), dtype=self.dtype)
    h = self.unet(cast(x / self.sigma, self.dtype), emb, train, block_kwargs,
                  c * self.channel_mult[0], song=False)
    h = nn.silu(group_norm(h.shape[-1], self.dtype, 1e-5, name='out_norm')(h))
    v = Conv2d(x.shape[-1], 3, name='out_conv', init_mode='kaiming_uniform', init_weight=0.0,
               init_bias=0.0, dtype=self.dtype)(h)
    return (self.sigma * v).astype(out_dtype)
