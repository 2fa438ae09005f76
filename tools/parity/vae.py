"""Writes tests/fixtures/vae_parity.npz: our VAE, loaded through our loader, against diffusers' own
`AutoencoderKL` (docs/vae.md).

  python tools/parity/vae.py          (a venv with torch, diffusers, safetensors, jax, flax)

1. The fixture's network (`tests/vae_files.py: PARITY`, three levels at widths 8/16/16) with random
   weights drawn from a seed by `write_random_vae`, every bias and GroupNorm affine non-trivial, is
   written in diffusers' layout; diffusers' `from_pretrained` must load every tensor of it (under
   both attention namings); its posterior moments and decoder output on fixed inputs, and the keys
   and shapes of diffusers' state dict, go into the fixture (the test redraws the weights from the
   seed and goes through the same loader); also the same in float64 on both sides.
2. diffusers' own writer: a tiny AutoencoderKL with every parameter perturbed is saved by
   `save_pretrained` (safetensors and config.json), read by our `load`, and compared in float32
   and float64 (printed, not stored); again without quant convolutions, latent width 16 and a
   shift factor (SD3/FLUX style).
3. The parameter counts of Stable Diffusion's configuration on both sides.
It stops unless every float32 difference is at most 1e-5 and every float64 one at most 1e-12.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tests'))
SD = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
          norm_num_groups=32)
SIDE = 32   # the test images: 2 × 32 × 32 × 3, latents 2 × 8 × 8 × 4


def inputs(latent_channels=4, downsampling=4):
  """x: smooth colour patterns plus noise in [-1, 1]; z: a standard-normal latent."""
  rng = np.random.RandomState(1)
  yy, xx = np.meshgrid(np.linspace(-1, 1, SIDE), np.linspace(-1, 1, SIDE), indexing='ij')
  x = np.stack([np.stack([np.sin(3 * xx + p), np.cos(2 * yy - p), xx * yy], -1)
                for p in (0.0, 1.3)])
  x = np.clip(0.8 * x + 0.2 * rng.randn(*x.shape), -1, 1).astype(np.float32)
  z = rng.randn(2, SIDE // downsampling, SIDE // downsampling, latent_channels).astype(np.float32)
  return x, z


def reference_outputs(ref, x, z):
  """diffusers' posterior (mean, logvar) of x and decoding of z, NHWC."""
  import torch  # pylint: disable=g-import-not-at-top
  nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  with torch.no_grad():
    posterior = ref.encode(nchw(x)).latent_dist
    decoded = ref.decode(nchw(z)).sample
  return nhwc(posterior.mean), nhwc(posterior.logvar), nhwc(decoded)


def our_outputs(module, params, x, z):
  mean, logvar = module.apply({'params': params}, x, method=module.encode)
  return np.asarray(mean), np.asarray(logvar), np.asarray(
      module.apply({'params': params}, z, method=module.decode))


def max_errors(ours, theirs):
  return [float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs)]


def float64_outputs(module, params, ref, x, z):
  """Ours and diffusers' outputs with the same weights and inputs in float64 (a copy of ref)."""
  import copy  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  x, z = x.astype(np.float64), z.astype(np.float64)
  theirs = reference_outputs(copy.deepcopy(ref).double(), x, z)
  with jax.enable_x64(True):
    ours = our_outputs(module, jax.tree.map(lambda a: np.asarray(a, np.float64), params), x, z)
  return ours, theirs


def fixture_network(tmp):
  """Part 1: the seeded file, loaded by diffusers under both namings and by us."""
  from diffusers import AutoencoderKL  # pylint: disable=g-import-not-at-top
  import vae_files  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  x, z = inputs(vae_files.PARITY['latent_channels'],
                2 ** (len(vae_files.PARITY['block_out_channels']) - 1))
  tensors = vae_files.random_tensors(
      vae_files.PARITY['seed'], block_out_channels=vae_files.PARITY['block_out_channels'],
      layers_per_block=vae_files.PARITY['layers_per_block'],
      latent_channels=vae_files.PARITY['latent_channels'])
  outputs = []
  for old in (False, True):
    folder = os.path.join(tmp, f'seeded_old{int(old)}')
    vae_files.write_random_vae(folder, old_attention_names=old, **vae_files.PARITY)
    ref = AutoencoderKL.from_pretrained(folder).eval()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    assert set(state) == set(tensors), set(state) ^ set(tensors)   # every tensor loaded ...
    for k, v in tensors.items():                                    # ... as it was written
      assert np.array_equal(state[k], v), k
    outputs.append(reference_outputs(ref, x, z))
    module, params = vae.load(folder)
    print(f'seeded file, {"old" if old else "new"} attention names: max |ours − diffusers| of '
          f'mean, logvar, decoded = {max_errors(our_outputs(module, params, x, z), outputs[-1])}')
  assert all(np.array_equal(a, b) for a, b in zip(*outputs))
  keys = np.array([f'{k} {tuple(v.shape)}' for k, v in ref.state_dict().items()])
  # The same network in float64 on both sides: what is left of the float32 difference is rounding.
  ours64, exact = float64_outputs(module, params, ref, x, z)
  errors64 = max_errors(ours64, exact)
  print(f'the same in float64: max |ours − diffusers| = {errors64}')
  print(f'float32 against float64: ours {max_errors(our_outputs(module, params, x, z), exact)}, '
        f'diffusers {max_errors(outputs[0], exact)}')
  errors = max_errors(our_outputs(module, params, x, z), outputs[0])
  return dict(x=x, z=z, mean=outputs[0][0], logvar=outputs[0][1], decoded=outputs[0][2],
              mean64=exact[0], logvar64=exact[1], decoded64=exact[2], state_dict_keys=keys), \
      max(errors), max(errors64)


def diffusers_written(tmp):
  """Part 2: files that diffusers' save_pretrained wrote, through our loader."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import AutoencoderKL  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  worst = worst64 = 0.0
  for name, cfg in (('sd-style', dict(block_out_channels=(8, 16, 16), layers_per_block=2,
                                      norm_num_groups=4, scaling_factor=0.5)),
                    ('no quant convs', dict(block_out_channels=(8, 16), layers_per_block=1,
                                            norm_num_groups=4, latent_channels=16,
                                            use_quant_conv=False, use_post_quant_conv=False,
                                            scaling_factor=1.5, shift_factor=0.1))):
    n = len(cfg['block_out_channels'])
    torch.manual_seed(0)
    ref = AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * n,
                        up_block_types=('UpDecoderBlock2D',) * n, **cfg).eval()
    with torch.no_grad():
      for p in ref.parameters():
        p.add_(0.1 * torch.randn_like(p))
    folder = os.path.join(tmp, name.replace(' ', '_'))
    ref.save_pretrained(folder, safe_serialization=True)
    module, params = vae.load(folder)
    assert module.scaling_factor == cfg['scaling_factor']
    assert module.shift_factor == cfg.get('shift_factor', 0.0)
    x, z = inputs(module.latent_channels, module.downsampling)
    errors = max_errors(our_outputs(module, params, x, z), reference_outputs(ref, x, z))
    errors64 = max_errors(*float64_outputs(module, params, ref, x, z))
    print(f'diffusers save_pretrained ({name}): max |ours − diffusers| of mean, logvar, '
          f'decoded = {errors}; in float64 {errors64}')
    worst, worst64 = max(worst, *errors), max(worst64, *errors64)
  return worst, worst64


def parameter_counts():
  """Part 3: Stable Diffusion's AutoencoderKL, diffusers' count and ours."""
  from diffusers import AutoencoderKL  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import vae  # pylint: disable=g-import-not-at-top
  ref = AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 4,
                      up_block_types=('UpDecoderBlock2D',) * 4, **SD)
  count_reference = sum(p.numel() for p in ref.parameters())
  count_ours = sum(int(np.prod(s)) for s in vae.parameter_shapes(vae.AutoencoderKL(**SD)).values())
  print(f'parameters of SD\'s AutoencoderKL: diffusers {count_reference:,}, ours {count_ours:,}')
  return dict(count_reference=count_reference, count_ours=count_ours)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default=os.path.join(REPO, 'tests', 'fixtures', 'vae_parity.npz'))
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    fixture, *worst = fixture_network(tmp)
    worst = np.maximum(worst, diffusers_written(tmp))
  counts = parameter_counts()
  assert worst[0] <= 1e-5 and worst[1] <= 1e-12, worst   # float32, float64
  assert counts['count_reference'] == counts['count_ours']
  np.savez_compressed(args.out, **fixture, **counts)
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
