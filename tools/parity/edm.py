"""Writes tests/fixtures/edm_{ddpmpp,adm}_parity.npz: our U-Nets against NVlabs/edm's own
`training/networks.py` (SongUNet as DDPM++, DhariwalUNet as ADM).

  python tools/parity/edm.py --networks PATH/TO/edm/training/networks.py   (a venv with torch, jax, flax)

Each network is built at a tiny width with random weights (every bias, GroupNorm affine and
zero-initialised layer non-zero; drawn by `random_params` from a seed, so the test draws the same and
the fixture holds only inputs, outputs and counts), converted to EDM's state dict and run on the
same inputs.
The reference gets our (s, t − s) embedding (the output of our `time_embedding`) in place of its
positional noise embedding, x / σ0 as input, the one-hot label (zeros for the dropped label); its
output is multiplied by σ0. Also records the parameter counts of the full-size networks (EDM's
CIFAR-10 DDPM++ and ImageNet-64 ADM) on both sides.
"""
import argparse
import importlib.util
import os
import sys
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
SIGMA, CLASSES, SIZE = 0.5, 3, 8

TINY = {  # ours (SongUNet / DhariwalUNet fields) and EDM's constructor arguments
    'ddpmpp': (dict(channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,)),
               dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4],
                    dropout=0.0)),
    'adm': (dict(channels=32, channel_mult=(2, 4), num_blocks=1, attn_resolutions=(4, 8)),
            dict(model_channels=32, channel_mult=[2, 4], num_blocks=1, attn_resolutions=[4, 8],
                 dropout=0.0)),
}
FULL = {  # EDM's configurations: CIFAR-10 DDPM++ (unconditional), ImageNet-64 ADM (1000 classes)
    'ddpmpp': (32, 0, dict(channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,)),
               dict(model_channels=128, channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16])),
    'adm': (64, 1000, dict(channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
                           attn_resolutions=(32, 16, 8)),
            dict(model_channels=192, channel_mult=[1, 2, 3, 4], num_blocks=3,
                 attn_resolutions=[32, 16, 8])),
}


def reference_module(path):
  persistence = types.ModuleType('torch_utils.persistence')
  persistence.persistent_class = lambda cls: cls
  sys.modules['torch_utils'] = types.ModuleType('torch_utils')
  sys.modules['torch_utils'].persistence = persistence
  sys.modules['torch_utils.persistence'] = persistence
  spec = importlib.util.spec_from_file_location('edm_networks', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def ours(kind, **fields):
  from flowmap_jax.models.unet import DhariwalUNet, SongUNet  # pylint: disable=g-import-not-at-top
  return (SongUNet if kind == 'ddpmpp' else DhariwalUNet)(
      num_fourier=4, max_freq=8.0, sigma=SIGMA, **fields)


def inputs():
  rng = np.random.RandomState(0)
  return dict(x=rng.randn(4, SIZE, SIZE, 3).astype(np.float32),
              s=np.array([0.0, 0.1, 0.4, 0.7], np.float32),
              t=np.array([0.0, 0.6, 0.9, 1.0], np.float32),
              y=np.array([0, 1, 2, CLASSES], np.int32))  # the last: the null label of guidance


def random_params(kind, seed=0):
  """{path: array} of the tiny network, drawn in sorted key order from one seed (not stored: the
  test draws the same): kernels N(0, 1/fan_in), biases N(0, 0.1), GroupNorm scales 1 + N(0, 0.1),
  so that every zero-initialised layer and every bias carries signal."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  net = ours(kind, num_classes=CLASSES, **TINY[kind][0])
  f = inputs()
  shapes = jax.eval_shape(net.init, jax.random.key(0), f['s'], f['t'], f['x'], f['y'])['params']
  flat = traverse_util.flatten_dict(shapes, sep='/')
  rng = np.random.RandomState(seed)
  out = {}
  for key in sorted(flat):
    shape, leaf = flat[key].shape, key.rsplit('/', 1)[1]
    if leaf == 'kernel':
      value = rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))
    elif leaf == 'scale':
      value = 1 + 0.1 * rng.randn(*shape)
    else:
      value = 0.1 * rng.randn(*shape)
    out[key] = value.astype(np.float32)
  return out


def our_side(kind):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  net = ours(kind, num_classes=CLASSES, **TINY[kind][0])
  f = inputs()
  x, s, t, y = f['x'], f['s'], f['t'], f['y']
  flat = random_params(kind)
  params = traverse_util.unflatten_dict(flat, sep='/')
  out = np.asarray(net.apply({'params': params}, s, t, x, y))
  from flowmap_jax.models.embeddings import fourier  # pylint: disable=g-import-not-at-top
  features = jnp.concatenate([fourier(jnp.asarray(s), 4, 8.0), fourier(jnp.asarray(t - s), 4, 8.0)],
                             axis=-1)
  w = params['time_embedding']
  emb = np.asarray(features @ w['kernel'] + w['bias'])  # our time_embedding's output
  return flat, f, emb, out


def torch_state(flat):
  """Our flat parameter tree as EDM's state dict."""
  import torch  # pylint: disable=g-import-not-at-top
  state = {}
  for key, value in flat.items():
    *path, leaf = key.split('/')
    if path[0] == 'time_embedding':
      continue  # ours
    head = path[0]
    if head.startswith(('enc_', 'dec_')):
      head = head[:3] + '.' + head[4:]
    module = '.'.join([head] + path[1:])
    if leaf == 'kernel':
      value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
      name = 'weight'
    else:
      name = {'scale': 'weight', 'bias': 'bias'}[leaf]
    state[f'{module}.{name}'] = torch.from_numpy(np.ascontiguousarray(value))
  return state


def reference_output(lib, kind, flat, inputs, emb):
  import torch  # pylint: disable=g-import-not-at-top
  cls = lib.SongUNet if kind == 'ddpmpp' else lib.DhariwalUNet
  ref = cls(img_resolution=SIZE, in_channels=3, out_channels=3, label_dim=CLASSES,
            **TINY[kind][1]).eval()
  missing, unexpected = ref.load_state_dict(torch_state(flat), strict=False)
  assert not unexpected, unexpected
  assert all(k.endswith('resample_filter') for k in missing), missing

  half = emb.shape[1] // 2
  # DDPM++ swaps the sin/cos halves of its noise embedding; hand it ours pre-swapped.
  given = np.concatenate([emb[:, half:], emb[:, :half]], 1) if kind == 'ddpmpp' else emb

  class OurTimeEmbedding(torch.nn.Module):
    def forward(self, noise):
      del noise
      return torch.from_numpy(given)

  ref.map_noise = OurTimeEmbedding()
  x = torch.from_numpy(inputs['x'] / SIGMA).permute(0, 3, 1, 2)
  labels = np.eye(CLASSES + 1, dtype=np.float32)[inputs['y']][:, :CLASSES]  # null label: zeros
  with torch.no_grad():
    out = ref(x, torch.zeros(4), torch.from_numpy(labels))
  return SIGMA * out.permute(0, 2, 3, 1).numpy()


def parameter_counts(lib, kind):
  """(ours, EDM's) parameter counts of the full-size network."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size, classes, our_fields, edm_fields = FULL[kind]
  from flowmap_jax.models.unet import DhariwalUNet, SongUNet  # pylint: disable=g-import-not-at-top
  net = (SongUNet if kind == 'ddpmpp' else DhariwalUNet)(num_classes=classes, num_fourier=16,
                                                          max_freq=32.0, **our_fields)
  y = jnp.zeros((1,), jnp.int32) if classes else None
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros(1), jnp.zeros(1),
                          jnp.zeros((1, size, size, 3)), y)['params']
  n_ours = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  cls = lib.SongUNet if kind == 'ddpmpp' else lib.DhariwalUNet
  ref = cls(img_resolution=size, in_channels=3, out_channels=3, label_dim=classes, **edm_fields)
  n_ref = sum(p.numel() for p in ref.parameters())
  return n_ours, n_ref


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--networks', required=True, help="NVlabs/edm's training/networks.py")
  args = ap.parse_args()
  lib = reference_module(args.networks)
  for kind in ('ddpmpp', 'adm'):
    flat, inputs, emb, out = our_side(kind)
    expected = reference_output(lib, kind, flat, inputs, emb)
    n_ours, n_ref = parameter_counts(lib, kind)
    print(f'{kind}: max |ours - reference| {np.max(np.abs(out - expected)):.3g} (outputs up to '
          f'{np.max(np.abs(expected)):.3g}); full size: ours {n_ours:,} parameters, EDM {n_ref:,}')
    path = os.path.join(REPO, 'tests', 'fixtures', f'edm_{kind}_parity.npz')
    np.savez_compressed(path, expected=expected, count_ours=n_ours, count_edm=n_ref, **inputs)
    print(f'wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
