"""Tiny random VAE files in diffusers' layout, without torch, for tests that need a VAE: a
`diffusion_pytorch_model.safetensors` with every tensor named and shaped as diffusers' AutoencoderKL
names it, and the `config.json` diffusers writes beside it (docs/vae.md).

The names and shapes are written out here from diffusers' constructors (not from our network), and
tools/parity/vae.py checks them against diffusers' own state dict: the fixture
tests/fixtures/vae_parity.npz holds that state dict's keys, and the outputs of diffusers' network
loaded from `write_random_vae(**PARITY)`.
"""
import json
import os

import numpy as np

# The parity fixture's network: three levels (two asymmetric-padding downsamplings), one resnet per
# encoder block and two per decoder block, widths that change (1×1 skips) and that do not. (Small,
# so the suite compiles it quickly; tools/parity/vae.py also checks two resnets per block.)
PARITY = dict(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
              latent_channels=4, seed=0)
_OLD_ATTENTION = {'to_q': 'query', 'to_k': 'key', 'to_v': 'value', 'to_out.0': 'proj_attn'}


def diffusers_shapes(*, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                     in_channels=3, out_channels=3, old_attention_names=False,
                     attention_as_conv=False):
  """{key: shape} of diffusers' AutoencoderKL state dict (torch layouts: conv OIHW, linear
  (out, in); `attention_as_conv`: the attention linears as (out, in, 1, 1) convolutions, as in old
  files)."""
  shapes = {}

  def conv(name, c_out, c_in, k):
    shapes[f'{name}.weight'] = (c_out, c_in, k, k)
    shapes[f'{name}.bias'] = (c_out,)

  def norm(name, c):
    shapes[f'{name}.weight'] = (c,)
    shapes[f'{name}.bias'] = (c,)

  def resnet(name, c_in, c_out):
    norm(f'{name}.norm1', c_in)
    conv(f'{name}.conv1', c_out, c_in, 3)
    norm(f'{name}.norm2', c_out)
    conv(f'{name}.conv2', c_out, c_out, 3)
    if c_in != c_out:
      conv(f'{name}.conv_shortcut', c_out, c_in, 1)

  def mid_block(name, c):
    resnet(f'{name}.resnets.0', c, c)
    norm(f'{name}.attentions.0.group_norm', c)
    for linear in ('to_q', 'to_k', 'to_v', 'to_out.0'):
      linear = _OLD_ATTENTION[linear] if old_attention_names else linear
      shapes[f'{name}.attentions.0.{linear}.weight'] = (c, c, 1, 1) if attention_as_conv else (c, c)
      shapes[f'{name}.attentions.0.{linear}.bias'] = (c,)
    resnet(f'{name}.resnets.1', c, c)

  channels, n = tuple(block_out_channels), len(block_out_channels)
  conv('encoder.conv_in', channels[0], in_channels, 3)
  c_in = channels[0]
  for i, c in enumerate(channels):
    for j in range(layers_per_block):
      resnet(f'encoder.down_blocks.{i}.resnets.{j}', c_in if j == 0 else c, c)
    c_in = c
    if i < n - 1:
      conv(f'encoder.down_blocks.{i}.downsamplers.0.conv', c, c, 3)
  mid_block('encoder.mid_block', channels[-1])
  norm('encoder.conv_norm_out', channels[-1])
  conv('encoder.conv_out', 2 * latent_channels, channels[-1], 3)
  conv('decoder.conv_in', channels[-1], latent_channels, 3)
  mid_block('decoder.mid_block', channels[-1])
  c_in = channels[-1]
  for i, c in enumerate(reversed(channels)):
    for j in range(layers_per_block + 1):
      resnet(f'decoder.up_blocks.{i}.resnets.{j}', c_in if j == 0 else c, c)
    c_in = c
    if i < n - 1:
      conv(f'decoder.up_blocks.{i}.upsamplers.0.conv', c, c, 3)
  norm('decoder.conv_norm_out', channels[0])
  conv('decoder.conv_out', out_channels, channels[0], 3)
  conv('quant_conv', 2 * latent_channels, 2 * latent_channels, 1)
  conv('post_quant_conv', latent_channels, latent_channels, 1)
  return shapes


def random_tensors(seed=0, **fields):
  """{key: float32 array}, drawn in sorted key order from one seed so that every entry matters:
  weights N(0, 1/fan_in), biases N(0, 0.1²), GroupNorm scales 1 + N(0, 0.1²)."""
  rng = np.random.RandomState(seed)
  tensors = {}
  for key, shape in sorted(diffusers_shapes(**fields).items()):
    if key.endswith('.bias'):
      value = 0.1 * rng.randn(*shape)
    elif len(shape) == 1:  # a GroupNorm's weight
      value = 1 + 0.1 * rng.randn(*shape)
    else:
      value = rng.randn(*shape) / np.sqrt(np.prod(shape[1:]))
    tensors[key] = value.astype(np.float32)
  return tensors


def write_random_vae(folder, *, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                     latent_channels=4, seed=0, old_attention_names=False, attention_as_conv=False,
                     scaling_factor=0.18215, write_config=True):
  """Writes folder/diffusion_pytorch_model.safetensors (random weights, `random_tensors`) and, with
  `write_config`, folder/config.json as diffusers writes them; returns the safetensors file's path.
  One seed gives the same values under either attention naming and layout."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  fields = dict(block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                latent_channels=latent_channels)
  tensors = random_tensors(seed, **fields)
  if old_attention_names or attention_as_conv:
    # The same values under the old names / layout: drawn under the new names, then renamed.
    old = diffusers_shapes(old_attention_names=old_attention_names,
                           attention_as_conv=attention_as_conv, **fields)
    new = diffusers_shapes(**fields)
    tensors = {o: tensors[k].reshape(old[o]) for o, k in zip(old, new)}
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, 'diffusion_pytorch_model.safetensors')
  save_file(tensors, path)
  if write_config:
    n = len(block_out_channels)
    config = {'_class_name': 'AutoencoderKL', '_diffusers_version': '0.42.1', 'act_fn': 'silu',
              'block_out_channels': list(block_out_channels),
              'down_block_types': ['DownEncoderBlock2D'] * n, 'force_upcast': True,
              'in_channels': 3, 'latent_channels': latent_channels, 'latents_mean': None,
              'latents_std': None, 'layers_per_block': layers_per_block,
              'mid_block_add_attention': True, 'norm_num_groups': norm_num_groups,
              'out_channels': 3, 'sample_size': 32, 'scaling_factor': scaling_factor,
              'shift_factor': None, 'up_block_types': ['UpDecoderBlock2D'] * n,
              'use_post_quant_conv': True, 'use_quant_conv': True}
    with open(os.path.join(folder, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config, f, indent=2, sort_keys=True)
  return path
