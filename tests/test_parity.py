"""Our networks against the references' own code, on fixtures that tools/parity/ wrote with torch
(the suite needs no torch): random weights, every bias and zero-initialised layer non-zero."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from flowmap_jax.models.dit import DiT

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


def _load(name):
  z = np.load(os.path.join(FIXTURES, name))
  params = traverse_util.unflatten_dict(
      {k[len('params/'):]: z[k] for k in z.files if k.startswith('params/')}, sep='/')
  return params, {k: z[k] for k in z.files if not k.startswith('params/')}


def test_dit_equals_facebookresearch_dit():
  """tools/parity/dit.py: DiT's models.py with our (s, t − s) embedding in place of its timestep
  embedder, at width 64, depth 2, patch 2, 3 classes and the null label."""
  params, f = _load('dit_parity.npz')
  net = DiT(size='T', patch_size=2, num_classes=3, num_fourier=4, max_freq=8.0, sigma=0.5)
  out = net.apply({'params': params}, f['s'], f['t'], f['x'], f['y'])
  assert float(np.max(np.abs(f['expected']))) > 0.1  # the fixture carries signal
  np.testing.assert_allclose(out, f['expected'], atol=1e-5, rtol=0)


def test_dit_initialisation_is_dits():
  """xavier-uniform linears and patch embedding (fans p·p·C and width), normal(0.02) time MLP and
  label table, zero adaLN modulations and output layer."""
  net = DiT(size='S', patch_size=2, num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  p = jax.jit(net.init)(jax.random.key(0), jnp.zeros(1), jnp.zeros(1), x,
                        jnp.zeros(1, jnp.int32))['params']
  def uniform_bound(w, fan_in, fan_out):
    bound = np.sqrt(6 / (fan_in + fan_out))
    assert float(jnp.max(jnp.abs(w))) <= bound and abs(float(jnp.std(w)) - bound / np.sqrt(3)) < 0.05 * bound
  block = p['DiTBlock_0']
  uniform_bound(block['Dense_1']['kernel'], 384, 3 * 384)      # qkv
  uniform_bound(block['Dense_4']['kernel'], 4 * 384, 384)      # mlp.fc2
  uniform_bound(p['Conv_0']['kernel'], 2 * 2 * 3, 384)         # patch embedding
  for w in (p['label_embedding']['embedding'], p['time_embedding']['Dense_0']['kernel'],
            p['time_embedding']['Dense_1']['kernel']):
    assert abs(float(jnp.std(w)) - 0.02) < 0.002
  for w in (block['Dense_0']['kernel'], p['Dense_0']['kernel'], p['Dense_1']['kernel']):
    assert not jnp.any(w)  # adaLN-zero and the output layer
  assert not any(jnp.any(b) for b in jax.tree.leaves(
      {k: v['bias'] for k, v in block.items()}))  # biases start at zero


def test_fid_features_equal_pytorch_fid_at_32_64_and_512_px():
  """tools/parity/fid.py: pytorch-fid's InceptionV3([3]) pool3 features on the same uint8 images,
  random weights with non-trivial batch-norm statistics drawn from one seed on both sides."""
  from flowmap_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  tool = _tool('fid')
  z = np.load(os.path.join(FIXTURES, 'fid_parity.npz'))
  features = fid.feature_fn(tool.random_params())
  for side in (32, 64, 512):
    expected = z[f'features_{side}']
    assert float(np.max(np.abs(expected))) > 0.1
    np.testing.assert_allclose(features(z[f'images_{side}']), expected, atol=1e-5, rtol=0)


def _tool(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(FIXTURES), '..', 'tools', 'parity', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'parity_{name}', path)
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  return tool


@pytest.mark.parametrize('kind', ['ddpmpp', 'adm'])
def test_unets_equal_edm(kind):
  """tools/parity/edm.py: EDM's SongUNet (DDPM++) and DhariwalUNet (ADM) from NVlabs/edm's
  networks.py, fed our (s, t − s) embedding in place of their positional noise embedding; 2 heads
  of 64 channels in the ADM's 128-channel attention."""
  tool = _tool('edm')
  f = np.load(os.path.join(FIXTURES, f'edm_{kind}_parity.npz'))
  net = tool.ours(kind, num_classes=tool.CLASSES, **tool.TINY[kind][0])
  params = traverse_util.unflatten_dict(tool.random_params(kind), sep='/')
  out = net.apply({'params': params}, f['s'], f['t'], f['x'], f['y'])
  assert float(np.max(np.abs(f['expected']))) > 0.1
  np.testing.assert_allclose(out, f['expected'], atol=1e-5, rtol=0)


@pytest.mark.parametrize('kind', ['ddpmpp', 'adm'])
def test_full_size_unets_have_edms_parameters_plus_our_time_embedding(kind):
  """EDM's CIFAR-10 DDPM++ (55.73 M) and ImageNet-64 ADM (295.90 M) have exactly EDM's parameters
  plus our time_embedding, a linear map of the (s, t − s) Fourier features (2·(2·16 + 1) inputs)
  to EDM's noise-embedding width, where EDM's positional embedding has none."""
  from flowmap_jax.models.unet import DhariwalUNet, SongUNet  # pylint: disable=g-import-not-at-top
  tool = _tool('edm')
  size, classes, fields, _ = tool.FULL[kind]
  net = (SongUNet if kind == 'ddpmpp' else DhariwalUNet)(num_classes=classes, num_fourier=16,
                                                          max_freq=32.0, **fields)
  y = jnp.zeros((1,), jnp.int32) if classes else None
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros(1), jnp.zeros(1),
                          jnp.zeros((1, size, size, 3)), y)['params']
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  f = np.load(os.path.join(FIXTURES, f'edm_{kind}_parity.npz'))
  width = fields['channels']
  assert count == int(f['count_ours']) == int(f['count_edm']) + 2 * (2 * 16 + 1) * width + width
