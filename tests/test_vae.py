"""Stable Diffusion's VAE (flowmap_jax/models/vae.py, docs/vae.md): diffusers' AutoencoderKL on the
fixture tools/parity/vae.py wrote, through our loader from a diffusers-layout file that
tests/vae_files.py redraws without torch; both attention namings; every loader error."""
import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import vae_files
from flowmap_jax.models import vae

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'vae_parity.npz')


@pytest.fixture(scope='module')
def fixture():
  return np.load(FIXTURE)


@pytest.fixture(scope='module')
def parity_vae(tmp_path_factory):
  """(module, params) of the fixture's network, read by our loader from the file that
  `write_random_vae(**PARITY)` writes (the weights diffusers was given)."""
  folder = tmp_path_factory.mktemp('parity_vae')
  return vae.load(os.path.dirname(vae_files.write_random_vae(folder, **vae_files.PARITY)))


@functools.partial(jax.jit, static_argnums=0)
def _run(module, params, x, z):
  """(mean, logvar) of x and the decoding of z, in one compiled program per module and dtype."""
  return (*module.apply({'params': params}, x, method=module.encode),
          module.apply({'params': params}, z, method=module.decode))


def test_vae_equals_diffusers_autoencoder_kl(fixture, parity_vae):
  """tools/parity/vae.py: diffusers' AutoencoderKL loaded from the file `write_random_vae(**PARITY)`
  writes (three levels, widths 8/16/16, 1 + 2 resnets per level), on 2 × 32 × 32 images and
  standard-normal latents: to 1e-5 in float32 (float32 rounding on both sides: the same network
  in float64 agrees to 1e-12); latents at a quarter of the image side."""
  module, params = parity_vae
  x, z = fixture['x'], fixture['z']
  outs = _run(module, params, x, z)
  assert outs[0].shape == outs[1].shape == (2, 8, 8, 4) == z.shape and outs[2].shape == x.shape
  for name, out in zip(('mean', 'logvar', 'decoded'), outs):
    assert float(np.std(fixture[name])) > 0.3, name  # the fixture carries signal
    np.testing.assert_allclose(out, fixture[name], atol=1e-5, rtol=0, err_msg=name)
  with jax.enable_x64(True):
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    outs = _run(module, params64, x.astype(np.float64), z.astype(np.float64))
    for name, out in zip(('mean', 'logvar', 'decoded'), outs):
      assert out.dtype == np.float64
      np.testing.assert_allclose(out, fixture[f'{name}64'], atol=1e-12, rtol=0, err_msg=name)


def test_bfloat16_is_close_to_float32(fixture, tmp_path):
  """dtype=bfloat16: activations in bfloat16 (GroupNorm statistics and attention logits in
  float32), parameters and outputs in float32, within bfloat16's precision of diffusers' float32."""
  module16, params16 = vae.load(
      vae_files.write_random_vae(tmp_path, **vae_files.PARITY), dtype=jnp.bfloat16)
  assert all(a.dtype == np.float32 for a in jax.tree.leaves(params16))
  for name, out in zip(('mean', 'logvar', 'decoded'),
                       _run(module16, params16, fixture['x'], fixture['z'])):
    assert out.dtype == jnp.float32
    error = float(jnp.max(jnp.abs(out - fixture[name])))
    assert 0 < error < 0.05 * float(np.max(np.abs(fixture[name]))), (name, error)  # 2.2 % seen


def test_logvar_is_clamped(fixture, parity_vae):
  """logvar in [−30, 20], as diffusers' DiagonalGaussianDistribution clamps it."""
  module, params = parity_vae
  for bias, bound in ((100.0, 20.0), (-100.0, -30.0)):
    b = np.concatenate([params['quant_conv']['bias'][:4], np.full(4, bias, np.float32)])
    p = {**params, 'quant_conv': {**params['quant_conv'], 'bias': b}}
    assert np.all(_run(module, p, fixture['x'], fixture['z'])[1] == bound)


def test_random_vae_files_name_every_tensor_as_diffusers_does(fixture):
  """vae_files' names and shapes are those of diffusers' own state dict (recorded by the parity
  tool), and those our network's parameters map to."""
  fields = {k: vae_files.PARITY[k] for k in ('block_out_channels', 'layers_per_block',
                                             'latent_channels')}
  written = {f'{k} {v}' for k, v in vae_files.diffusers_shapes(**fields).items()}
  assert written == set(fixture['state_dict_keys'].tolist())
  module = vae.AutoencoderKL(norm_num_groups=4, **fields)
  ours = {f'{vae.diffusers_key(p)} {vae._torch_shape(s)}'  # pylint: disable=protected-access
          for p, s in vae.parameter_shapes(module).items()}
  assert ours == written


def test_full_configuration_has_diffusers_parameter_count(fixture):
  """Stable Diffusion's AutoencoderKL (sd-vae-ft-ema / -mse): 83,653,863 parameters in diffusers and
  here, counted from a trace."""
  count = sum(int(np.prod(s)) for s in vae.parameter_shapes(vae.AutoencoderKL()).values())
  assert count == int(fixture['count_reference']) == int(fixture['count_ours']) == 83_653_863


def test_both_attention_namings_and_conv_shaped_linears_load_the_same(tmp_path):
  """Files before diffusers 0.14 call the attention linears query/key/value/proj_attn, and very old
  ones store them as 1×1 convolutions: the same tensors load to the same parameters."""
  trees = [vae.load(vae_files.write_random_vae(tmp_path / f'{old}{conv}', old_attention_names=old,
                                               attention_as_conv=conv))[1]
           for old, conv in ((False, False), (True, False), (True, True))]
  names = load_file(str(tmp_path / 'TrueFalse' / vae.WEIGHTS_FILE))
  assert 'encoder.mid_block.attentions.0.proj_attn.weight' in names
  for tree in trees[1:]:
    assert jax.tree.structure(tree) == jax.tree.structure(trees[0])
    assert all(np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(trees[0])))


def _edit(tmp_path, change):
  """A tiny VAE file with `change` applied to its {key: array}; returns its path."""
  path = vae_files.write_random_vae(tmp_path)
  tensors = load_file(path)
  change(tensors)
  save_file(tensors, path)
  return path


def _delete(key):
  return lambda tensors: tensors.pop(key)


def _add(key):
  return lambda tensors: tensors.update({key: np.zeros(3, np.float32)})


def _reshape(key):
  return lambda tensors: tensors.update({key: tensors[key][:-1]})


def _both_names(tensors):
  tensors['decoder.mid_block.attentions.0.value.bias'] = tensors[
      'decoder.mid_block.attentions.0.to_v.bias']


@pytest.mark.parametrize('change, key, words', [
    (_delete('decoder.up_blocks.1.resnets.0.conv_shortcut.weight'),
     'decoder.up_blocks.1.resnets.0.conv_shortcut.weight', 'missing keys'),
    (_delete('encoder.mid_block.attentions.0.to_out.0.bias'),
     'encoder.mid_block.attentions.0.to_out.0.bias', 'missing keys'),
    (_add('encoder.down_blocks.0.resnets.0.time_emb_proj.weight'),
     'encoder.down_blocks.0.resnets.0.time_emb_proj.weight', 'unexpected keys'),
    (_reshape('encoder.conv_in.weight'),
     'encoder.conv_in.weight (7, 3, 3, 3) (expected (8, 3, 3, 3))', 'wrong shapes'),
    (_reshape('quant_conv.bias'), 'quant_conv.bias (7,) (expected (8,))', 'wrong shapes'),
    (_both_names, 'decoder.mid_block.attentions.0.value.bias', 'given twice'),
])
def test_loader_names_the_key_and_the_file(tmp_path, change, key, words):
  path = _edit(tmp_path, change)
  with pytest.raises(vae.VAEWeightsError) as e:
    vae.load(path)
  message = str(e.value)
  assert key in message and words in message and path in message and '\n' not in message


def test_loader_reports_unreadable_files_and_foreign_configs(tmp_path):
  """A file that is not safetensors, a missing file, a config.json that is not JSON or describes
  another network, and a file without config.json that is not Stable Diffusion's size."""
  path = vae_files.write_random_vae(tmp_path / 'a')
  with open(path, 'wb') as f:
    f.write(b'not a safetensors file')
  for bad in (path, str(tmp_path / 'nowhere' / vae.WEIGHTS_FILE)):
    with pytest.raises(vae.VAEWeightsError, match='cannot read VAE weights') as e:
      vae.load(bad)
    assert bad in str(e.value)
  path = vae_files.write_random_vae(tmp_path / 'b')
  config_path = str(tmp_path / 'b' / vae.CONFIG_FILE)
  with open(config_path, encoding='utf-8') as f:
    config = json.load(f)
  for field, value in (('act_fn', 'gelu'), ('up_block_types', ['AttnUpDecoderBlock2D'] * 2),
                       ('_class_name', 'AutoencoderTiny'), ('layers_per_block', '2'),
                       ('norm_num_groups', 3), ('block_out_channels', 16)):
    with open(config_path, 'w', encoding='utf-8') as f:
      json.dump({**config, field: value}, f)
    with pytest.raises(vae.VAEWeightsError, match=field) as e:
      vae.load(path)
    assert config_path in str(e.value)
  with open(config_path, 'w', encoding='utf-8') as f:
    f.write('{not json')
  with pytest.raises(vae.VAEWeightsError, match='cannot read the VAE config'):
    vae.load(path)
  os.remove(config_path)  # Stable Diffusion's configuration then, which this tiny file is not
  assert vae.read_config(path) == vae.AutoencoderKL().config
  with pytest.raises(vae.VAEWeightsError, match=(
      r"no config.json beside it: Stable Diffusion's sizes\): .*"
      r'wrong shapes: decoder\.conv_in\.bias \(16,\) \(expected \(512,\)\)')):
    vae.load(path)


def test_config_scaling_factor_and_hash(tmp_path):
  """The configuration and scaling factor from config.json, given back as plain values that build
  the same module; the hash is the file's sha256 whether the file or its folder is named."""
  path = vae_files.write_random_vae(tmp_path, latent_channels=3, scaling_factor=0.5)
  module, params = vae.load(tmp_path)
  assert (module.scaling_factor, module.shift_factor, module.downsampling) == (0.5, 0.0, 2)
  assert params['post_quant_conv']['kernel'].shape == (1, 1, 3, 3)
  assert vae.AutoencoderKL(**module.config) == module and json.dumps(module.config)
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  assert vae.file_hash(path) == vae.file_hash(tmp_path) == digest
