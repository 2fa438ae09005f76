"""Writes tests/fixtures/sit_parity.npz: our DiT with time_embedding='sit' on SiT's converted
weights against willisma/SiT's own code (`models.py` and `transport/`).

  git clone https://github.com/willisma/SiT ~/SiT
  ~/venv_parity/bin/pip install timm torchdiffeq diffrax
  ~/venv_parity/bin/python tools/parity/sit.py --sit ~/SiT [--pt-dir DIR]

A tiny SiT (hidden 64, depth 2, 2 heads, patch 2, 8×8×4 latents, 3 classes and the null label,
learn_sigma=True as in the released weights) gets random weights from a seed (`random_state_dict`:
numpy, every parameter non-zero, the fixed position embedding SiT initialises), loaded into SiT's
model with strict=True; the test regenerates the same state dict without torch, and the fixture
holds SiT's own state-dict keys and shapes, the inputs and SiT's outputs:
- `forward` at several (t, y), the null label among them, and one x at two times;
- `forward_with_cfg` at scale 1.5 (SiT's: guidance on the first 3 channels) and the standard
  all-channel guidance SiT's comment describes, on the same doubled batch;
- its ODE sampler (transport `Sampler.sample_ode`: dopri5 at its defaults atol 1e-6, rtol 1e-3,
  250 output times) from fixed noise, and the same ODE in float64 at atol = rtol = 1e-10, SiT's
  network in float64 but for its time features (SiT computes them in float32): the exact end point.
Our side (forward and our adaptive sampler) is printed here and checked by tests/test_sit.py.
With --pt-dir, the tiny SiT is also saved in both layouts tools/convert_sit.py reads: the state dict
alone (the released file's layout) and train.py's {'model', 'ema', 'opt', 'args'}.
"""
import argparse
import copy
import importlib.util
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

SIZE, CHANNELS, PATCH, WIDTH, DEPTH, HEADS, CLASSES = 8, 4, 2, 64, 2, 2, 3
GUIDANCE = 1.5
SIT_ODE = dict(atol=1e-6, rtol=1e-3)   # SiT's train_utils.parse_ode_args defaults
EXACT_ODE = dict(atol=1e-10, rtol=1e-10)


def random_state_dict(shapes, seed=0):
  """{key: float32 array} for SiT's state-dict {key: shape}, drawn from `seed` in sorted key order:
  linear and patch weights N(0, 1/fan_in) (adaLN ones halved, so modulations stay moderate; the
  time MLP's first one times 4, as SiT's t ∈ [0, 1] moves few of its 256 features), biases
  N(0, 0.1²), the label table N(0, 1), pos_embed SiT's fixed sine-cosine table."""
  from flowmap_jax.models import dit  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  out = {}
  for key in sorted(shapes):
    shape = tuple(shapes[key])
    if key == 'pos_embed':
      grid = int(round(shape[1] ** 0.5))
      out[key] = dit.sincos_2d(grid, shape[2]).astype(np.float32)[None]
      continue
    if key.endswith('.bias'):
      value = 0.1 * rng.randn(*shape)
    elif key == 'y_embedder.embedding_table.weight':
      value = rng.randn(*shape)
    else:
      value = rng.randn(*shape) / np.sqrt(np.prod(shape[1:]))
      if 'adaLN_modulation' in key:
        value *= 0.5
      elif key == 't_embedder.mlp.0.weight':
        value *= 4.0
    out[key] = value.astype(np.float32)
  return out


def ours(state_dict):
  """(our DiT with time_embedding='sit', its params) from SiT's state dict, through
  flowmap_jax.models.sit's conversion; the t − s embedder as initialised (last layer zero)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flowmap_jax.models import sit  # pylint: disable=g-import-not-at-top
  converted, spec = sit.convert(state_dict)
  net = sit.network(spec)
  z = jnp.zeros((1,))
  x = jnp.zeros((1, spec.latent_size, spec.latent_size, spec.channels))
  init = jax.jit(net.init)(jax.random.key(0), z, z, x, jnp.zeros((1,), jnp.int32))
  flat = traverse_util.flatten_dict(jax.device_get(init['params']))
  flat.update(converted)
  return net, traverse_util.unflatten_dict(flat)


def inputs():
  rng = np.random.RandomState(1)
  x = rng.randn(6, SIZE, SIZE, CHANNELS).astype(np.float32)
  x[4] = x[1]   # one x at two times and the same label: the fixture carries the time signal
  t = np.array([0.0, 0.05, 0.3, 0.5, 0.9, 1.0], np.float32)
  y = np.array([0, 1, 2, CLASSES, 1, 0], np.int32)   # CLASSES: the null label of guidance
  noise = rng.randn(4, SIZE, SIZE, CHANNELS).astype(np.float32)
  ode_y = np.array([0, 1, 2, 1], np.int32)
  return dict(x=x, t=t, y=y, noise=noise, ode_y=ode_y)


def _import(sit_dir):
  spec = importlib.util.spec_from_file_location('sit_models', os.path.join(sit_dir, 'models.py'))
  models = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(models)
  sys.path.insert(0, sit_dir)
  import transport  # pylint: disable=g-import-not-at-top
  return models, transport


def reference(sit_dir, f, pt_dir=None):
  """SiT's outputs on the inputs `f`, and its state dict's keys and shapes."""
  import torch  # pylint: disable=g-import-not-at-top
  models, transport = _import(sit_dir)
  torch.manual_seed(0)
  ref = models.SiT(input_size=SIZE, patch_size=PATCH, in_channels=CHANNELS, hidden_size=WIDTH,
                   depth=DEPTH, num_heads=HEADS, class_dropout_prob=0.1, num_classes=CLASSES,
                   learn_sigma=True).eval()
  own = ref.state_dict()
  shapes = {k: tuple(v.shape) for k, v in own.items()}
  state = random_state_dict(shapes)
  pos = float(np.max(np.abs(own['pos_embed'].numpy() - state['pos_embed'])))
  print(f"SiT's own pos_embed vs ours (dit.sincos_2d): max abs {pos:.3g}")
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  if pt_dir:
    _save_layouts(ref, pt_dir)
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
  nhwc = lambda a: a.permute(0, 2, 3, 1).detach().numpy()
  labels = lambda a: torch.from_numpy(a.astype(np.int64))
  out = {}
  with torch.no_grad():
    x, t, y = nchw(f['x']), torch.from_numpy(f['t']), labels(f['y'])
    out['expected'] = nhwc(ref(x, t, y))
    # forward_with_cfg on the doubled batch: the first half [x, y], the second [x, null].
    xx, tt = torch.cat([x, x]), torch.cat([t, t])
    yy = torch.cat([y, torch.full_like(y, CLASSES)])
    out['expected_cfg'] = nhwc(ref.forward_with_cfg(xx, tt, yy, GUIDANCE))[:len(x)]
    cond, uncond = ref(xx, tt, yy).chunk(2)
    out['expected_cfg_all_channels'] = nhwc(uncond + GUIDANCE * (cond - uncond))
    sampler = transport.Sampler(transport.create_transport('Linear', 'velocity'))
    z, zy = nchw(f['noise']), labels(f['ode_y'])
    sit_ode = sampler.sample_ode(sampling_method='dopri5', num_steps=250, **SIT_ODE)
    out['ode_sit'] = nhwc(sit_ode(z, ref.forward, y=zy)[-1])
    exact_ode = sampler.sample_ode(sampling_method='dopri5', num_steps=2, **EXACT_ODE)
    ref64 = copy.deepcopy(ref).double()
    embedder = ref64.t_embedder   # SiT's time features are float32 whatever the weights' dtype
    embedder.forward = lambda t_: embedder.mlp(embedder.timestep_embedding(t_, 256).double())
    out['ode_exact'] = nhwc(exact_ode(z.double(), ref64.forward, y=zy)[-1]).astype(np.float32)
  return out, shapes


def _save_layouts(ref, pt_dir):
  import argparse as argparse_lib  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  os.makedirs(pt_dir, exist_ok=True)
  state = ref.state_dict()
  torch.save(state, os.path.join(pt_dir, 'tiny_sit_ema.pt'))
  opt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
  torch.save({'model': state, 'ema': state, 'opt': opt.state_dict(),
              'args': argparse_lib.Namespace(model='SiT-T/2', image_size=64, num_classes=CLASSES)},
             os.path.join(pt_dir, 'tiny_sit_train.pt'))
  print(f'wrote {pt_dir}/tiny_sit_ema.pt and tiny_sit_train.pt')


def ours_report(state_dict, f, out):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flowmap_jax import sampling  # pylint: disable=g-import-not-at-top
  net, params = ours(state_dict)
  v = net.apply({'params': params}, f['t'], f['t'], f['x'], f['y'])
  print(f'forward: max |ours - SiT| = {np.max(np.abs(v - out["expected"])):.3g} '
        f'(max |SiT| {np.max(np.abs(out["expected"])):.3g})')
  velocity = lambda t, x, y: net.apply({'params': params}, t, t, x, y)
  noise, y = jnp.asarray(f['noise']), jnp.asarray(f['ode_y'])
  exact, theirs = out['ode_exact'], out['ode_sit']
  print(f'ODE end point, max |.| = {np.max(np.abs(exact)):.3g}:')
  print(f"  SiT's dopri5 (atol 1e-6, rtol 1e-3) vs exact: {np.max(np.abs(theirs - exact)):.3g}")
  for solver, tol in (('dopri5', SIT_ODE), ('tsit5', dict(atol=1e-5, rtol=1e-5)),
                      ('dopri5', dict(atol=1e-6, rtol=1e-6))):
    x1, nfe = sampling.adaptive(velocity, noise, solver, tol['rtol'], tol['atol'], y=y)
    x1 = np.asarray(x1)
    print(f'  ours {solver} (atol {tol["atol"]}, rtol {tol["rtol"]}, {int(nfe)} NFE): vs exact '
          f'{np.max(np.abs(x1 - exact)):.3g}, vs SiT\'s {np.max(np.abs(x1 - theirs)):.3g}')


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--sit', required=True, help='a clone of willisma/SiT (models.py, transport/)')
  ap.add_argument('--out', default=os.path.join(REPO, 'tests', 'fixtures', 'sit_parity.npz'))
  ap.add_argument('--pt-dir', default=None, help='also save the tiny SiT as .pt checkpoints here')
  args = ap.parse_args()
  f = inputs()
  out, shapes = reference(args.sit, f, args.pt_dir)
  state = random_state_dict(shapes)
  ours_report(state, f, out)
  keys = sorted(shapes)
  np.savez_compressed(args.out, **f, **out, keys=np.array(keys),
                      shapes=np.array([','.join(map(str, shapes[k])) for k in keys]))
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)')


if __name__ == '__main__':
  main()
