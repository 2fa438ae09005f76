"""A SiT checkpoint as a teacher workdir (docs/sit.md): `config.json` (configs/fm_imagenet256.py
with SiT's network: model.dit.time_embedding='sit') and an Orbax checkpoint whose evaluation EMA
is SiT's EMA weights, which teacher.load and flowmap_jax.load open without torch.

    python tools/convert_sit.py --checkpoint SiT-XL-2-256x256.pt --out /models/sit_xl2_256
    python -m flowmap_jax.sit --npz sit_xl2_256.npz --out /models/sit_xl2_256

tools/convert_sit.py reads the `.pt` file with torch and calls `write_teacher` (or, with --npz,
writes the state dict as numpy arrays for the second command, in an environment without torch).
SiT's time is ours (docs/sit.md §2): x_t = t·x1 + (1 − t)·x0, noise x0 at t = 0, data at t = 1,
velocity x1 − x0, t ∈ [0, 1] fed to the network unscaled; so v_θ(t, t, x) is SiT's v(x, t).
"""
import argparse
import dataclasses
import json
import sys

import jax
import numpy as np
from etils import epath
from flax import traverse_util
from jax.sharding import Mesh

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import state as state_lib
from flowmap_jax import teacher
from flowmap_jax.data import latents
from flowmap_jax.models import sit as sit_weights
from flowmap_jax.models.sit import SiTWeightsError

# The teacher config of each input side (SD-VAE latents: 256 px -> 32, 512 px -> 64).
DEFAULT_CONFIGS = {32: 'configs/fm_imagenet256.py', 64: 'configs/fm_imagenet512.py'}
# SiT's (and DiT's) forward_with_cfg guides the first 3 latent channels only (`guided_apply_fn`).
SIT_GUIDED_CHANNELS = 3
PROVENANCE_FILE = 'sit.json'


def teacher_config(spec, config=None, dtype='float32'):
  """The teacher's config: `config` (default DEFAULT_CONFIGS for the checkpoint's input side) with
  SiT's network: our DiT of the checkpoint's size and patch, SiT's time embedding, `dtype`
  activations. Its data must be what SiT saw: latents of spec's shape, scaled by SD's 0.18215
  (σ0 = 1: SiT's noise is N(0, I) and its network sees x as it is), spec's label count."""
  if config is None:
    if spec.latent_size not in DEFAULT_CONFIGS:
      raise SiTWeightsError(f'{spec.describe()}: no config for {spec.latent_size}×'
                            f'{spec.latent_size} latents ({sorted(DEFAULT_CONFIGS)} have one); '
                            'pass --config')
    config = config_io.load(DEFAULT_CONFIGS[spec.latent_size])
  d = config.data
  what = f'the config (data {d.name!r})'
  problems = []
  shape = (spec.latent_size, spec.latent_size, spec.channels)
  if not latents.is_latent(d) or latents.shape(d) != shape:
    problems.append(f'SiT runs on {shape} latents but {what} has '
                    f'{latents.shape(d) if latents.is_latent(d) else "no latents"}')
  elif float(d.sigma0) != 1.0:
    problems.append(f'data.sigma0={d.sigma0} must be 1 (SiT noise is N(0, I))')
  elif tuple(d.get('latent_mean', ())) or float(d.latent_scale) != 0.18215:
    problems.append("SiT's latents are SD's scaled by 0.18215 (data.latent_scale=0.18215, no "
                    'data.latent_mean/latent_std)')
  elif latents.num_classes(d) != spec.num_classes:
    problems.append(f'the checkpoint embeds {spec.num_classes} classes (+ the null label) but '
                    f'{what} has {latents.num_classes(d)}')
  if problems:
    raise SiTWeightsError(f'{spec.describe()}: ' + '; '.join(problems))
  config = config_io.from_json(config.to_json())   # a copy
  with config.unlocked():
    config.model.name = 'dit'
    config.model.dit.update(size=spec.size, patch_size=spec.patch_size, time_embedding='sit')
    if 'qk_norm' in config.model.dit:
      config.model.dit.qk_norm = False
    config.model.dtype = dtype
  return config


def one_device_mesh():
  return Mesh(np.asarray(jax.local_devices()[:1]).reshape(1, 1), ('data', 'fsdp'))


def teacher_params(converted, exp):
  """`exp`'s parameters (time_embedding='sit') with SiT's converted tensors (models.sit.convert) and
  the embedder of t − s as initialised from the run's initial key (last layer zero)."""
  key = state_lib.base_keys(exp.config.seed)[0]
  shapes = traverse_util.flatten_dict(jax.eval_shape(exp.init_params, key))
  left = {p[:2] for p in shapes if p not in converted}   # what SiT has no tensor for
  assert set(converted) <= set(shapes) and left == {sit_weights.SECOND_TIME}, left
  for path, array in converted.items():
    assert array.shape == shapes[path].shape, (path, array.shape, shapes[path].shape)
  # Only the second embedder is initialised (the rest of the init is dead code to XLA): the same
  # values as in a full init from that key, without a second copy of the network in memory.
  outer, inner = sit_weights.SECOND_TIME
  second = jax.device_get(jax.jit(lambda k: exp.init_params(k)[outer][inner])(key))
  second = {sit_weights.SECOND_TIME + p: v for p, v in traverse_util.flatten_dict(second).items()}
  return traverse_util.unflatten_dict({**converted, **second})


def write_teacher(state_dict, out, config=None, dtype='float32', source='the checkpoint',
                  provenance=None):
  """Writes the teacher workdir `out` from SiT's state dict {key: array}: config.json, a step-0
  TrainState whose parameters and evaluation EMA are SiT's weights (an fm run that could also go on
  training), and sit.json (the network, `provenance`). Returns (config, spec)."""
  out = epath.Path(out)
  if checkpoint.has_checkpoint(out) or (out / 'config.json').exists():
    raise SiTWeightsError(f'{out} already holds a run; convert into a new folder')
  converted, spec = sit_weights.convert(state_dict, source)
  config = teacher_config(spec, config, dtype)
  exp = state_lib.Experiment(config, mesh=one_device_mesh())
  params = teacher_params(converted, exp)
  state = exp.init_state(params)
  out.mkdir(parents=True, exist_ok=True)
  mngr = checkpoint.manager(out)
  checkpoint.save(mngr, state)
  mngr.wait_until_finished()
  mngr.close()
  (out / 'config.json').write_text(json.dumps(config_io.to_dict(config), indent=2))
  (out / PROVENANCE_FILE).write_text(json.dumps(
      {'network': dataclasses.asdict(spec), **(provenance or {})}, indent=2))
  return config, spec


def guided_apply_fn(exp, guidance, channels=SIT_GUIDED_CHANNELS):
  """SiT's `forward_with_cfg` (DiT's too): v_u + w (v_c − v_u) on the first `channels` latent
  channels, v_c alone on the others, as SiT's published samples were made ("for exact
  reproducibility", its comment says; the standard approach, all channels, is
  teacher.guided_apply_fn). The difference is docs/sit.md §4's."""
  return teacher.guided_apply_fn(exp, guidance, channels=channels)


def read_npz(path):
  """(state dict, provenance) from the file `tools/convert_sit.py --npz` writes."""
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  provenance = json.loads(str(arrays.pop('__provenance__'))) if '__provenance__' in arrays else {}
  return arrays, provenance


def one_line(error):
  return ' '.join(str(error).split()) or type(error).__name__


def main(argv=None):
  ap = argparse.ArgumentParser(prog='python -m flowmap_jax.sit', description=(
      'Write a teacher workdir from the .npz of `tools/convert_sit.py --npz` (no torch needed).'))
  ap.add_argument('--npz', required=True, help='the state dict tools/convert_sit.py --npz wrote')
  ap.add_argument('--out', required=True, help='the teacher workdir to write (a new folder)')
  ap.add_argument('--config', default=None, help='the teacher config to start from, path[:arg] '
                  '(default: configs/fm_imagenet256.py, or 512 for 64×64 latents)')
  ap.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                  help="the teacher's activations (SiT's own: float32)")
  args = ap.parse_args(argv)
  try:
    if not epath.Path(args.npz).is_file():
      raise SiTWeightsError(f'{args.npz}: no such file')
    state_dict, provenance = read_npz(args.npz)
    config = config_io.load(args.config) if args.config else None
    _, spec = write_teacher(state_dict, args.out, config, args.dtype, source=args.npz,
                            provenance={'npz': str(args.npz), **provenance})
  except (SiTWeightsError, OSError, ValueError) as e:
    print(f'error: {one_line(e)}', file=sys.stderr)
    return 2
  print(f'wrote {args.out}: {spec.describe()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
