"""Writes tests/fixtures/fid_parity.npz: our Inception-v3 pool3 features against pytorch-fid's
`InceptionV3([3])` on the same uint8 images at 32, 64 and 512 px.

  python tools/parity/fid.py      (a venv with torch, pytorch-fid, jax, flax)

pytorch-fid's FID network is built from its own classes (torchvision's Inception-v3 with the
FIDInception blocks patched in, as `fid_inception_v3` does, without downloading its weights) and
given random weights with non-trivial batch-norm statistics. The weights are not stored: both this
script and the test draw them from `random_params(seed)`; the fixture holds the images and the
reference features.
"""
import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
SEED = 0


def random_params(seed=SEED):
  """Our Inception parameter tree with random values: kernels N(0, 1/fan_in), batch-norm scale and
  variance U(0.5, 1.5), bias and mean N(0, 0.1); drawn in sorted key order from one seed."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flowmap_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(fid.abstract_params(), sep='/')
  rng = np.random.RandomState(seed)
  out = {}
  for key in sorted(flat):
    shape = flat[key].shape
    kind = key.rsplit('/', 1)[1]
    if kind == 'kernel':
      value = rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))
    elif kind in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      value = 0.1 * rng.randn(*shape)
    out[key] = value.astype(np.float32)
  return traverse_util.unflatten_dict(out, sep='/')


def images():
  rng = np.random.RandomState(1)
  return {side: rng.randint(0, 256, (n, side, side, 3)).astype(np.uint8)
          for side, n in ((32, 2), (64, 2), (512, 1))}


def reference_features(params, batches):
  import torch  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as pf  # pylint: disable=g-import-not-at-top
  built = {}

  def fid_inception_v3():  # pytorch-fid's own function, less its weight download
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    built['net'] = net
    return net

  pf.fid_inception_v3 = fid_inception_v3
  model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  state = {}
  for key, value in traverse_util.flatten_dict(params, sep='/').items():
    module, kind = key.rsplit('/', 1)
    prefix = module.replace('/', '.')
    if kind == 'kernel':
      state[f'{prefix}.weight'] = torch.from_numpy(value.transpose(3, 2, 0, 1).copy())
    else:
      name = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}[kind]
      state[f'{prefix}.{name}'] = torch.from_numpy(value.copy())
  missing, unexpected = built['net'].load_state_dict(state, strict=False)
  assert not unexpected, unexpected
  assert all(k.startswith('fc.') or k.endswith('num_batches_tracked') for k in missing), missing
  out = {}
  with torch.no_grad():
    for side, x in batches.items():
      t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0  # pytorch-fid's input: [0, 1]
      out[side] = model(t)[0][:, :, 0, 0].numpy()
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default=os.path.join(REPO, 'tests', 'fixtures', 'fid_parity.npz'))
  args = ap.parse_args()
  from flowmap_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  params, batches = random_params(), images()
  expected = reference_features(params, batches)
  features = fid.feature_fn(params)
  for side, x in batches.items():
    print(f'{side} px: max |ours - reference| {np.max(np.abs(features(x) - expected[side])):.3g}'
          f' (features up to {np.max(np.abs(expected[side])):.3g})')
  np.savez_compressed(args.out, **{f'images_{s}': x for s, x in batches.items()},
                      **{f'features_{s}': f for s, f in expected.items()})
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
