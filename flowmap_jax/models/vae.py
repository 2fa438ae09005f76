"""Stable Diffusion's VAE (Rombach et al. 2022; diffusers' `AutoencoderKL`) and its weights from the
user's diffusers-layout file: docs/vae.md.

`AutoencoderKL` is diffusers' network layer for layer, NHWC: the encoder maps an image in [-1, 1]
to the moments (mean, log-variance) of a diagonal Gaussian posterior over latents downsampled
2^(len(block_out_channels) − 1) times, the decoder maps an (unscaled) latent back to an image.
Its defaults are sd-vae-ft-ema / sd-vae-ft-mse's configuration (83,653,863 parameters); every
dimension is a field, so a tiny one works in tests. `load` reads diffusers' own
`diffusion_pytorch_model.safetensors` (and `config.json` beside it) without torch;
tests/test_vae.py checks both against diffusers' code on a fixture that tools/parity/vae.py wrote.
"""
import dataclasses
import hashlib
import json
import os
import re
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flowmap_jax.models.attention import attention
from flowmap_jax.models.layers import cast

WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors'
CONFIG_FILE = 'config.json'
EPS = 1e-6  # diffusers' resnet_eps and the output norms' eps in every AutoencoderKL


class VAEWeightsError(ValueError):
  """A VAE weight file (or its config.json) that cannot be read, or does not fit the network: the
  one-line message names the file and the keys (or fields)."""


def _norm(groups, dtype, name):
  """GroupNorm as torch computes it (two-pass variance); float32 statistics under mixed
  precision."""
  return nn.GroupNorm(num_groups=groups, epsilon=EPS, dtype=dtype, use_fast_variance=False,
                      force_float32_reductions=dtype is not None, name=name)


def _conv(features, kernel, dtype, name, strides=1, padding=None):
  """torch's Conv2d(k, stride, padding=k // 2 unless given) in NHWC."""
  pad = kernel // 2 if padding is None else padding
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=((pad, pad),) * 2,
                 dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D without a time embedding:
  x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the skip a 1×1 convolution where the width
  changes."""
  features: int
  groups: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    norm = lambda name: _norm(self.groups, self.dtype, name)
    h = _conv(self.features, 3, self.dtype, 'conv1')(nn.silu(norm('norm1')(x)))
    h = _conv(self.features, 3, self.dtype, 'conv2')(nn.silu(norm('norm2')(h)))
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.dtype, 'conv_shortcut')(x)
    return x + h


class Attention(nn.Module):
  """diffusers' Attention of the VAE's mid blocks: one head over all pixels, on GroupNorm'd input,
  with q/k/v/out linears and the residual (rescale_output_factor 1)."""
  groups: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    h = _norm(self.groups, self.dtype, 'group_norm')(x).reshape(B, H * W, 1, C)
    dense = lambda name: nn.Dense(C, dtype=self.dtype, name=name)
    h = attention(dense('to_q')(h), dense('to_k')(h), dense('to_v')(h)).reshape(B, H * W, C)
    return x + dense('to_out')(h).reshape(B, H, W, C)


class Downsample(nn.Module):
  """diffusers' Downsample2D with padding 0: zero padding on the bottom and right only, then a 3×3
  convolution of stride 2 (H, W even → H/2, W/2)."""
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return _conv(x.shape[-1], 3, self.dtype, 'conv', strides=2, padding=0)(x)


class Upsample(nn.Module):
  """diffusers' Upsample2D: nearest-neighbour ×2, then a 3×3 convolution."""
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(x.shape[-1], 3, self.dtype, 'conv')(x)


class MidBlock(nn.Module):
  """diffusers' UNetMidBlock2D of the VAE: resnet, attention, resnet at constant width."""
  groups: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    C = x.shape[-1]
    x = ResnetBlock(C, self.groups, self.dtype, name='resnets_0')(x)
    x = Attention(self.groups, self.dtype, name='attentions_0')(x)
    return ResnetBlock(C, self.groups, self.dtype, name='resnets_1')(x)


class Block(nn.Module):
  """diffusers' DownEncoderBlock2D (`down`) or UpDecoderBlock2D (`up`): `layers` resnets to
  `features` channels, then the resampling (none in the last block)."""
  features: int
  layers: int
  groups: int
  down: bool = False
  up: bool = False
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    for j in range(self.layers):
      x = ResnetBlock(self.features, self.groups, self.dtype, name=f'resnets_{j}')(x)
    if self.down:
      x = Downsample(self.dtype, name='downsamplers_0')(x)
    if self.up:
      x = Upsample(self.dtype, name='upsamplers_0')(x)
    return x


class Encoder(nn.Module):
  """diffusers' Encoder (double_z): image → 2·latent_channels moments at 1/2^(n−1) of its
  side."""
  latent_channels: int
  block_out_channels: Sequence[int]
  layers_per_block: int
  groups: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, x):
    channels, n = self.block_out_channels, len(self.block_out_channels)
    h = _conv(channels[0], 3, self.dtype, 'conv_in')(x)
    for i, c in enumerate(channels):
      h = Block(c, self.layers_per_block, self.groups, down=i < n - 1, dtype=self.dtype,
                name=f'down_blocks_{i}')(h)
    h = MidBlock(self.groups, self.dtype, name='mid_block')(h)
    h = nn.silu(_norm(self.groups, self.dtype, 'conv_norm_out')(h))
    return _conv(2 * self.latent_channels, 3, self.dtype, 'conv_out')(h)


class Decoder(nn.Module):
  """diffusers' Decoder: latent → image, the up blocks in reversed channel order with
  layers_per_block + 1 resnets each."""
  out_channels: int
  block_out_channels: Sequence[int]
  layers_per_block: int
  groups: int
  dtype: Optional[jnp.dtype] = None

  @nn.compact
  def __call__(self, z):
    channels, n = tuple(reversed(self.block_out_channels)), len(self.block_out_channels)
    h = _conv(channels[0], 3, self.dtype, 'conv_in')(z)
    h = MidBlock(self.groups, self.dtype, name='mid_block')(h)
    for i, c in enumerate(channels):
      h = Block(c, self.layers_per_block + 1, self.groups, up=i < n - 1, dtype=self.dtype,
                name=f'up_blocks_{i}')(h)
    h = nn.silu(_norm(self.groups, self.dtype, 'conv_norm_out')(h))
    return _conv(self.out_channels, 3, self.dtype, 'conv_out')(h)


class AutoencoderKL(nn.Module):
  """diffusers' AutoencoderKL, NHWC; the defaults are Stable Diffusion's (sd-vae-ft-ema / -mse).

  `encode(x)`: x in [-1, 1] → (mean, logvar) of the posterior, logvar clamped to [−30, 20] as
  diffusers' DiagonalGaussianDistribution does. `decode(z)`: an unscaled latent → image
  ≈ [-1, 1]. A diffusion model sees (z − shift_factor) · scaling_factor; the two factors are
  carried here and used by callers, not by the network. `dtype` None computes in the inputs'
  dtype; bfloat16 keeps GroupNorm statistics and attention logits in float32, the parameters in
  float32, and returns the inputs' dtype.
  """
  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0
  dtype: Optional[jnp.dtype] = None

  def setup(self):
    arch = dict(block_out_channels=tuple(self.block_out_channels),
                layers_per_block=self.layers_per_block, groups=self.norm_num_groups,
                dtype=self.dtype)
    self.encoder = Encoder(self.latent_channels, **arch)
    self.decoder = Decoder(self.out_channels, **arch)
    if self.use_quant_conv:
      self.quant_conv = _conv(2 * self.latent_channels, 1, self.dtype, None)
    if self.use_post_quant_conv:
      self.post_quant_conv = _conv(self.latent_channels, 1, self.dtype, None)

  @property
  def downsampling(self):
    """Image side / latent side: 2^(number of blocks − 1)."""
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def config(self):
    """The architecture and latent scaling as config.json-style plain values (for manifests)."""
    return {k: tuple(getattr(self, k)) if k == 'block_out_channels' else getattr(self, k)
            for k in CONFIG_FIELDS}

  def encode(self, x):
    moments = self.encoder(cast(x, self.dtype))
    if self.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(x.dtype), 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z):
    h = cast(z, self.dtype)
    if self.use_post_quant_conv:
      h = self.post_quant_conv(h)
    return self.decoder(h).astype(z.dtype)

  def __call__(self, x):
    """The reconstruction from the posterior mean (also what `init` traces)."""
    return self.decode(self.encode(x)[0])


# The AutoencoderKL fields that config.json sets (all but dtype), under diffusers' names.
CONFIG_FIELDS = ('in_channels', 'out_channels', 'latent_channels', 'block_out_channels',
                 'layers_per_block', 'norm_num_groups', 'use_quant_conv', 'use_post_quant_conv',
                 'scaling_factor', 'shift_factor')
# config.json values of diffusers' AutoencoderKL that would build another network than ours.
_REQUIRED = {'_class_name': 'AutoencoderKL', 'act_fn': 'silu', 'mid_block_add_attention': True}

# Our module names ending in _N are diffusers' ModuleList entries `.N`; our `to_out` is its
# `to_out.0` (index 1 is a dropout). Files saved before diffusers 0.14 name the attention linears
# as the old AttentionBlock did; diffusers renames them on load (_fix_state_dict_keys_on_load).
_LISTS = ('down_blocks', 'up_blocks', 'resnets', 'attentions', 'downsamplers', 'upsamplers')
_OLD_ATTENTION = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}
_OLD_KEY = re.compile(r'^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$')


def diffusers_key(path):
  """Our parameter path ('encoder', 'down_blocks_0', 'resnets_1', 'norm1', 'scale') → diffusers'
  state-dict key 'encoder.down_blocks.0.resnets.1.norm1.weight'."""
  parts = []
  for p in path[:-1]:
    head, _, index = p.rpartition('_')
    parts.append(f'{head}.{index}' if head in _LISTS else 'to_out.0' if p == 'to_out' else p)
  return '.'.join(parts + ['bias' if path[-1] == 'bias' else 'weight'])


def _torch_shape(shape):
  """The shape diffusers stores for one of our parameters: conv HWIO → OIHW, linear (in, out) →
  (out, in), vectors as they are."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def _from_torch(array, shape):
  """A diffusers tensor in our layout for a parameter of `shape`, or None where it cannot be; a
  linear may be stored as a 1×1 convolution (out, in, 1, 1), as in old files."""
  if len(shape) == 4 and array.ndim == 4:
    array = array.transpose(2, 3, 1, 0)
  elif len(shape) == 2 and array.ndim == 4 and array.shape[2:] == (1, 1):
    array = array[:, :, 0, 0].T
  elif len(shape) == 2 and array.ndim == 2:
    array = array.T
  return array if array.shape == tuple(shape) else None


def parameter_shapes(module):
  """{our path: shape} of `module`'s parameters, from a trace (nothing is computed)."""
  side = module.downsampling
  x = jax.ShapeDtypeStruct((1, side, side, module.in_channels), jnp.float32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)['params']
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _listed(keys, limit=4):
  keys = sorted(keys)
  return ', '.join(keys[:limit]) + (f' and {len(keys) - limit} more' if len(keys) > limit else '')


def convert(tensors, module, source='the weights'):
  """diffusers' state dict {key: array} (either attention naming) → our float32 params of
  `module`.

  Every parameter of `module` must come from exactly one tensor of the right shape and every
  tensor must be used; otherwise VAEWeightsError names the missing, unexpected, doubly given and
  misshapen keys and `source`.
  """
  expected = {diffusers_key(path): (path, shape)
              for path, shape in parameter_shapes(module).items()}
  given, doubled = {}, []
  for key, array in tensors.items():
    m = _OLD_KEY.match(key)
    canonical = f'{m.group(1)}.{_OLD_ATTENTION[m.group(2)]}.{m.group(3)}' if m else key
    if canonical in given:
      doubled.append(key)
    given[canonical] = (key, array)
  problems = []
  missing = [k for k in expected if k not in given]
  unexpected = [given[k][0] for k in given if k not in expected]
  if missing:
    problems.append(f'missing keys {_listed(missing)}')
  if unexpected:
    problems.append(f'unexpected keys {_listed(unexpected)}')
  if doubled:
    problems.append(f'keys given twice (old and new attention names) {_listed(doubled)}')
  params, misshapen = {}, []
  for canonical, (path, shape) in expected.items():
    if canonical not in given:
      continue
    key, array = given[canonical]
    ours = _from_torch(np.asarray(array), shape)
    if ours is None:
      misshapen.append(f'{key} {tuple(np.shape(array))} (expected {_torch_shape(shape)})')
    else:
      params[path] = ours.astype(np.float32)
  if misshapen:
    problems.append(f'wrong shapes: {_listed(misshapen)}')
  if problems:
    raise VAEWeightsError(f'{source}: ' + '; '.join(problems))
  return traverse_util.unflatten_dict(params)


def weights_path(path):
  """The safetensors file: `path` itself, or diffusion_pytorch_model.safetensors in a folder."""
  return os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path


def config_path(path):
  """The config.json beside the weight file (it may not exist)."""
  return os.path.join(os.path.dirname(os.path.abspath(weights_path(path))), CONFIG_FILE)


def _positive_int(v):
  return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _size_problems(config):
  """What in AutoencoderKL fields is not a value this network can take."""
  problems = [f'{k} {config[k]!r}' for k in ('in_channels', 'out_channels', 'latent_channels',
                                             'layers_per_block', 'norm_num_groups')
              if not _positive_int(config[k])]
  channels, groups = config['block_out_channels'], config['norm_num_groups']
  if not (isinstance(channels, (list, tuple)) and channels and all(map(_positive_int, channels))):
    problems.append(f'block_out_channels {channels!r}')
  elif _positive_int(groups) and any(c % groups for c in channels):
    problems.append(f'block_out_channels {list(channels)} (not multiples of norm_num_groups '
                    f'{groups})')
  problems += [f'{k} {config[k]!r}' for k in ('scaling_factor', 'shift_factor')
               if isinstance(config[k], bool) or not isinstance(config[k], (int, float))]
  return problems + [f'{k} {config[k]!r}' for k in ('use_quant_conv', 'use_post_quant_conv')
                     if not isinstance(config[k], bool)]


def read_config(path):
  """AutoencoderKL fields from the config.json beside the weight file (diffusers writes one), else
  Stable Diffusion's. A config.json of another network than this one, or with values it cannot
  take, raises VAEWeightsError naming the fields."""
  file = config_path(path)
  defaults = {f.name: f.default for f in dataclasses.fields(AutoencoderKL)
              if f.name in CONFIG_FIELDS}
  if not os.path.exists(file):
    return defaults
  try:
    with open(file, encoding='utf-8') as f:
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise VAEWeightsError(f'{file}: cannot read the VAE config ({_one_line(e)})') from e
  if not isinstance(raw, dict):
    raise VAEWeightsError(f'{file}: not a JSON object')
  config = {k: raw.get(k, v) for k, v in defaults.items()}
  if config['shift_factor'] is None:  # diffusers' None: no shift
    config['shift_factor'] = 0.0
  problems = [f'{k} {raw[k]!r} (expected {v!r})' for k, v in _REQUIRED.items()
              if raw.get(k, v) != v]
  n = len(config['block_out_channels']) if isinstance(config['block_out_channels'], list) else 0
  for field, kind in (('down_block_types', 'DownEncoderBlock2D'),
                      ('up_block_types', 'UpDecoderBlock2D')):
    if n and field in raw and raw[field] != [kind] * n:
      problems.append(f'{field} {raw[field]!r} (expected {n} × {kind})')
  problems += _size_problems(config)
  if problems:
    raise VAEWeightsError(f'{file}: not a VAE this loader builds: {"; ".join(problems)}')
  return {**config, 'block_out_channels': tuple(config['block_out_channels']),
          'scaling_factor': float(config['scaling_factor']),
          'shift_factor': float(config['shift_factor'])}


def _one_line(error):
  return ' '.join(str(error).split()) or type(error).__name__


def load(path, dtype=None):
  """(module, params) from the user's diffusers-layout VAE: `path` the safetensors file or its
  folder; the architecture and scaling from config.json beside it, else Stable Diffusion's.
  module.scaling_factor, module.shift_factor and module.config describe it; `dtype` is the
  activations' (None: the inputs'), parameters stay float32. Raises VAEWeightsError on a file that
  cannot be read or does not fit."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  file = weights_path(path)
  module = AutoencoderKL(**read_config(path), dtype=dtype)
  try:
    tensors = load_file(file)
  except Exception as e:  # pylint: disable=broad-except  # safetensors raises several kinds
    raise VAEWeightsError(f'{file}: cannot read VAE weights ({_one_line(e)})') from e
  source = file if os.path.exists(config_path(file)) else f"{file} (no {CONFIG_FILE} beside it: Stable Diffusion's sizes)"
  return module, convert(tensors, module, source=source)


def file_hash(path):
  """sha256 (hex) of the weight file, for manifests."""
  digest = hashlib.sha256()
  with open(weights_path(path), 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()
