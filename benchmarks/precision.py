"""bfloat16 against float32: the relative error of what each loss regresses, on the CIFAR-10 U-Net.

The same parameters are applied twice, with float32 and with bfloat16 activations (parameters
float32, outputs cast to float32 by the network), and each loss's prediction and target are formed from
both. Printed: ‖q_bf16 − q_f32‖ / ‖q_f32‖ over a batch, at random initialisation and after --steps
training steps of the experiment's own loss in float32 (on MNIST from --data, padded to 32×32×3).

Quantities (docs/losses.md): v (FM), ∂_t X (LMD, LSD: the jvp output), the Eulerian residual
∂_s X + ∇_x X · b (EMD, ESD), ITVM's terminal average velocity (X_θ(s,t,x_s) − y)/(t − u) and its
target v_{θ⁻}(u, t, y), PSD's target and MeanFlow's target İ_s + (t − s) D v. ITVM's is shown three
ways: as the loss forms it now ((t − s) v_st − (u − s) v_su in float32, without x_s), as it was formed
before (x_s + (t − s) v_st − (x_s + (u − s) v_su)), and from outputs rounded to bfloat16 (a network
that does not cast its output).

  python benchmarks/precision.py --data mnist_train.npz --channels 32 --steps 300 --results
"""
import argparse
import os
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from flowmap_jax import config_io
from flowmap_jax import flow_map
from flowmap_jax import interpolants
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import time_sampling
from flowmap_jax.interpolants import bcast

HERE = os.path.dirname(os.path.abspath(__file__))


def config(args, dtype):
  c = config_io.load('configs/lsd_cifar10.py')
  u = c.model.unet
  u.channels, u.num_blocks = args.channels, args.num_blocks
  c.model.dtype = dtype
  c.data.batch_size = args.batch
  c.train.num_steps = max(args.steps, 1)
  return c


def mnist_batches(path, batch, seed=0):
  """MNIST digits as CIFAR-shaped uint8 images: padded to 32×32, repeated over 3 channels."""
  images = np.load(path)['images']
  rng = np.random.default_rng(seed)
  while True:
    x = images[rng.integers(0, len(images), batch)]
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    yield {'image': np.repeat(x[..., None], 3, axis=-1), 'label': np.zeros(batch, np.int32)}


def quantities(apply_fn, params, x1, key, tau):
  """{name: array}: what each loss regresses, on one batch of data x1 with its own draws."""
  k0, k1, k2 = jax.random.split(key, 3)
  B = x1.shape[0]
  x0 = 0.5 * jax.random.normal(k0, x1.shape)
  st = jnp.sort(jax.random.uniform(k1, (2, B)), axis=0)
  s, t = st[0], st[1]
  interp = interpolants.get('linear')
  x_s, dI_s = interpolants.I(interp, s, x0, x1), interpolants.dI(interp, s, x0, x1)
  u = time_sampling.sample_u(k2, s, t, 't_minus_tau', tau)
  gamma = jnp.full_like(s, 0.5)
  q = {'fm: v(t, t, x_t)': apply_fn(params, s, s, x_s)}
  X, dX_dt = flow_map.X_and_dt(apply_fn, params, s, t, x_s)
  q['lmd, lsd: ∂_t X'] = dX_dt
  q['lsd: target v(t, t, X)'] = apply_fn(params, t, t, X)
  b = apply_fn(params, s, s, x_s)
  q['emd: ∂_s X + ∇_x X · b'] = flow_map.X_and_eulerian(apply_fn, params, s, t, x_s, b)[1]
  v_st, v_su = apply_fn(params, s, t, x_s), apply_fn(params, s, u, x_s)
  y = flow_map.X_from_v(s, u, x_s, v_su)
  span = bcast(t - u, x_s)
  q['itvm: (X − y)/(t − u), now'] = (bcast(t - s, x_s) * v_st - bcast(u - s, x_s) * v_su) / span
  q['itvm: (X − y)/(t − u), before'] = (flow_map.X_from_v(s, t, x_s, v_st) - y) / span
  r = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  q['itvm: (X − y)/(t − u), uncast outputs'] = (flow_map.X_from_v(s, t, x_s, r(v_st))
                                               - flow_map.X_from_v(s, u, x_s, r(v_su))) / span
  q['itvm: target v(u, t, y)'] = apply_fn(params, u, t, y)
  m = gamma * s + (1 - gamma) * t
  v_sm = apply_fn(params, s, m, x_s)
  v_mt = apply_fn(params, m, t, flow_map.X_from_v(s, m, x_s, v_sm))
  q['psd: target'] = 0.5 * v_sm + 0.5 * v_mt
  v, Dv = flow_map.v_and_eulerian(apply_fn, params, s, t, x_s, dI_s)
  q['meanflow: target İ + (t − s) D v'] = dI_s + bcast(t - s, v) * Dv
  return q


def relative_errors(exp32, exp16, params, x1, key, tau):
  f32 = jax.jit(lambda p, x, k: quantities(exp32.apply_fn, p, x, k, tau))
  f16 = jax.jit(lambda p, x, k: quantities(exp16.apply_fn, p, x, k, tau))
  a, b = f32(params, x1, key), f16(params, x1, key)
  return {k: float(jnp.linalg.norm(b[k] - a[k]) / jnp.linalg.norm(a[k])) for k in a}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--channels', type=int, default=32, help='U-Net width (the config has 128)')
  ap.add_argument('--num_blocks', type=int, default=2, help='blocks per level (the config has 4)')
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--steps', type=int, default=300, help='float32 training steps before the second '
                  'measurement')
  ap.add_argument('--tau', type=float, default=0.05,
                  help="ITVM's τ (0.05: ITVM's default when RESULTS.md's table was measured)")
  ap.add_argument('--data', required=True,
                  help='an MNIST training .npz (images uint8 (N, 28, 28)), the data of the trained column')
  ap.add_argument('--results', action='store_true', help='write the table into RESULTS.md')
  args = ap.parse_args()
  command = 'python benchmarks/precision.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])

  exp32, exp16 = state_lib.Experiment(config(args, 'float32')), state_lib.Experiment(
      config(args, 'bfloat16'))
  state = exp32.init_state()
  batches = mnist_batches(args.data, args.batch)
  to_x1 = lambda batch: step_lib.batch_data(exp32, batch, None, None)[0]
  key = jax.random.key(123)
  x1 = to_x1(next(batches))
  columns = {'random init': relative_errors(exp32, exp16, state.params, x1, key, args.tau)}
  t0 = time.time()
  step = step_lib.jit_train_step(exp32)
  for _ in range(args.steps):
    state, metrics = step(state, next(batches), None)
  loss = float(metrics['loss'])
  train_s = time.time() - t0
  columns[f'after {args.steps} steps'] = relative_errors(exp32, exp16, state.params, x1, key,
                                                         args.tau)
  n_params = sum(p.size for p in jax.tree.leaves(state.params))
  names = list(columns['random init'])
  lines = ['| quantity | ' + ' | '.join(columns) + ' |', '|---' * (len(columns) + 1) + '|']
  lines += [f'| {n} | ' + ' | '.join(f'{100 * c[n]:.2f} %' for c in columns.values()) + ' |'
            for n in names]
  md = '\n'.join(lines)
  print(md)
  print(f'\n{n_params:,} parameters; {args.steps} LSD steps (float32) in {train_s:.0f} s, '
        f'final loss {loss:.4f}')
  if args.results:
    from compare_2d import write_results  # pylint: disable=g-import-not-at-top
    write_results('bfloat16 against float32: relative error of each loss\'s regression quantities', (
        f'Command: `{command}` (CPU)\n\nThe CIFAR-10 U-Net of `configs/lsd_cifar10.py` at '
        f'{args.channels} channels and {args.num_blocks} blocks per level ({n_params:,} '
        f'parameters), batch {args.batch}, times drawn uniformly (s < t), ITVM with u = t − τ, '
        f'τ = {args.tau}. The trained column: {args.steps} float32 steps of the config\'s loss '
        f'(LSD, learned weighting) on MNIST padded to 32×32×3. Each cell is '
        f'‖q_bf16 − q_f32‖ / ‖q_f32‖ for the same parameters.\n\n' + md))


if __name__ == '__main__':
  main()
