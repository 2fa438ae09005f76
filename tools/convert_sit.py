"""Converts a SiT checkpoint (willisma/SiT) into a teacher workdir that flowmap_jax opens without
torch (docs/sit.md).

  python tools/convert_sit.py --checkpoint SiT-XL-2-256x256.pt --out /models/sit_xl2_256

or in two steps, where torch and flowmap_jax live in different environments:

  python tools/convert_sit.py --checkpoint SiT-XL-2-256x256.pt --npz sit_xl2_256.npz  # torch, numpy
  python -m flowmap_jax.sit --npz sit_xl2_256.npz --out /models/sit_xl2_256           # no torch

It reads the released file (the EMA state dict itself) or a checkpoint of SiT's train.py
({'model', 'ema', 'opt', 'args'}: its 'ema', which SiT's own sample.py loads), with
torch.load(weights_only=True). The workdir's network, time convention and checks are
flowmap_jax/sit.py's and flowmap_jax/models/sit.py's. A file that is not a SiT checkpoint, or whose
keys or shapes do not fit, stops with exit code 2 and one line saying why.
"""
import argparse
import hashlib
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CheckpointError(Exception):
  pass


def one_line(error):
  return ' '.join(str(error).split()) or type(error).__name__


def load_state_dict(path):
  """({key: float32 numpy array}, which part of the file) of SiT's checkpoint at `path`."""
  import torch  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise CheckpointError(f'{path}: no such file')
  # train.py saves its argparse.Namespace beside the weights: the one class allowed beyond tensors.
  torch.serialization.add_safe_globals([argparse.Namespace])
  try:
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (pickle and zip errors of many kinds)
    raise CheckpointError(f'{path}: cannot read it as a torch checkpoint ({type(e).__name__}: '
                          f'{one_line(e)[:300]})')
  if isinstance(ckpt, dict) and 'ema' in ckpt:
    state, part = ckpt['ema'], "its 'ema' (a train.py checkpoint)"
  else:
    state, part = ckpt, 'the state dict (the released layout)'
  if not isinstance(state, dict) or not state or not all(
      isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
    top = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"{path}: neither a state dict nor SiT's train.py checkpoint "
                          f"({{'model', 'ema', 'opt', 'args'}}); it holds {top}")
  arrays = {k: (v.detach().float() if v.is_floating_point() else v).cpu().numpy()
            for k, v in state.items()}
  return arrays, part


def file_hash(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      digest.update(chunk)
  return digest.hexdigest()


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--checkpoint', required=True, help="SiT's .pt file, e.g. SiT-XL-2-256x256.pt")
  out = ap.add_mutually_exclusive_group(required=True)
  out.add_argument('--out', help='the teacher workdir to write (a new folder)')
  out.add_argument('--npz', help='write the state dict as numpy arrays only (for python -m '
                   'flowmap_jax.sit --npz FILE --out DIR)')
  ap.add_argument('--config', default=None, help='the teacher config to start from, path[:arg] '
                  '(default: configs/fm_imagenet256.py, or 512 for 64×64 latents)')
  ap.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                  help="the teacher's activations (SiT's own: float32)")
  args = ap.parse_args(argv)
  try:
    state_dict, part = load_state_dict(args.checkpoint)
    provenance = {'checkpoint': os.path.abspath(args.checkpoint), 'part': part,
                  'sha256': file_hash(args.checkpoint)}
    if args.npz:
      import numpy as np  # pylint: disable=g-import-not-at-top
      np.savez(args.npz, __provenance__=np.array(json.dumps(provenance)), **state_dict)
      print(f'wrote {args.npz}: {len(state_dict)} tensors of {part}; now '
            f'`python -m flowmap_jax.sit --npz {args.npz} --out DIR`')
      return 0
    sys.path.insert(0, REPO)
    try:
      from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
      from flowmap_jax import sit  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise CheckpointError(f'flowmap_jax does not import here ({one_line(e)}): write --npz FILE '
                            'with torch, then `python -m flowmap_jax.sit --npz FILE --out DIR` '
                            'where flowmap_jax is installed') from e
    try:
      config = config_io.load(args.config) if args.config else None
      _, spec = sit.write_teacher(state_dict, args.out, config, args.dtype,
                                  source=args.checkpoint, provenance=provenance)
    except (sit.SiTWeightsError, OSError, ValueError) as e:
      raise CheckpointError(one_line(e)) from e
  except CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.out}: {spec.describe()}, from {part} of {args.checkpoint}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
