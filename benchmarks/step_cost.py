"""Every loss's training-step cost relative to flow matching, measured side by side in one process.

For each loss: median step time after compilation, XLA's memory estimate of the compiled step
(`compiled.memory_analysis()`: temporaries + outputs), compile time, and the network passes the loss
costs in forward-equivalents (a forward 1, a backward 2, a jvp 2 and its backward 4; frozen teacher
and EMA evaluations are forwards), each relative to fm. Prints a Markdown table; --results writes it
into benchmarks/RESULTS.md.

  python benchmarks/step_cost.py --network mlp --batch 4096 --results
  python benchmarks/step_cost.py --network unet --batch 8 --losses fm,lsd,itvm --results  # CIFAR-10
  python benchmarks/step_cost.py --network dit --batch 8 --results                        # DiT-S/2
"""
import argparse
import platform
import statistics
import time

import jax
import numpy as np

from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import train

LOSSES = ['fm', 'lmd', 'emd', 'itvm', 'lsd', 'esd', 'psd', 'meanflow']


def passes(name, d):
  """Forward-equivalents per example at diag_fraction d (o = 1 − d off-diagonal), from each loss's
  code: F fwd = 1, fwd+bwd = 3, jvp = 2, jvp + its bwd = 6 (meanflow: bwd through the primal only, 4)."""
  o = 1 - d
  return {
      'fm': 3.0,
      'lmd': 3 * d + d + 6 * o + o,            # diag fwd+bwd, teacher on diag; jvp+bwd, teacher(X)
      'emd': 3 * d + d + o + 6 * o,            # diag fwd+bwd, teacher on diag; teacher b_s, jvp+bwd
      'itvm': 3 * (1 + o) + 1 + 2 * o,         # one online call on B + o·B, teacher on B, 2 EMA fwds
      'lsd': 3 * d + 6 * o + o,                # diag FM; jvp+bwd; target v(t,t,X)
      'esd': 3 * d + o + 6 * o + 2 * o,        # diag FM; v(s,s); jvp over s + bwd; jvp over x (sg)
      'psd': 3.0 + 2 * o,                      # one fwd+bwd on B; two target fwds
      'meanflow': 3 * d + 4 * o,               # diag FM; jvp with bwd through v only
  }[name]


def config_for(name, args):
  """The 2-D default's MLP, or the CIFAR-10 experiment's network (U-Net, or DiT-S/2 on it)."""
  if args.network == 'mlp':
    c = config_io.load('configs/itvm_checkerboard.py')
    c.model.width, c.model.depth = args.width, args.depth
  else:
    c = config_io.load('configs/itvm_cifar10.py')
    if args.network == 'dit':
      c.model.name, c.model.size, c.model.patch_size = 'dit', args.dit_size, 2
    c.model.dtype = args.dtype
  c.loss.name = name
  c.loss.diag_fraction = args.diag_fraction
  c.data.batch_size = args.batch
  return c


def batch_for(exp, args):
  if not exp.is_image:
    return {}
  rng = np.random.RandomState(0)
  return {'image': rng.randint(0, 256, (args.batch,) + exp.data_shape).astype(np.uint8),
          'label': rng.randint(0, 10, (args.batch,)).astype(np.int32)}


def measure(name, args):
  c = config_for(name, args)
  exp = train.Experiment(c)
  state = exp.init_state()
  teacher = exp.init_params(jax.random.key(1)) if name in losses.NEEDS_TEACHER else None
  batch = batch_for(exp, args)
  t0 = time.time()
  compiled = exp.jit_train_step.lower(state, batch, teacher).compile()
  compile_s = time.time() - t0
  mem = compiled.memory_analysis()
  mem_bytes = mem.temp_size_in_bytes + mem.output_size_in_bytes if mem else float('nan')
  for _ in range(args.warmup):
    state, m = compiled(state, batch, teacher)
  jax.block_until_ready(state)
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    state, m = compiled(state, batch, teacher)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return {'time': statistics.median(times), 'mem': mem_bytes, 'compile': compile_s,
          'passes': passes(name, args.diag_fraction) if name != 'fm' else 3.0}


def network_args(batch, repeats):
  """The arguments `config_for` reads, shared with sample_cost.py."""
  ap = argparse.ArgumentParser()
  ap.add_argument('--network', default='mlp', choices=['mlp', 'unet', 'dit'])
  ap.add_argument('--dit_size', default='S')
  ap.add_argument('--dtype', default='float32', help='image networks: float32 | bfloat16')
  ap.add_argument('--batch', type=int, default=batch)
  ap.add_argument('--width', type=int, default=256)
  ap.add_argument('--depth', type=int, default=4)
  ap.add_argument('--diag_fraction', type=float, default=0.75)
  ap.add_argument('--repeats', type=int, default=repeats)
  ap.add_argument('--results', action='store_true', help='write the table into RESULTS.md')
  return ap


def network_name(args):
  return {'mlp': f'MLP {args.depth}×{args.width}',
          'unet': 'CIFAR-10 U-Net (configs/itvm_cifar10.py: DDPM++ 128 ch ×[2,2,2], 4 blocks)',
          'dit': f'DiT-{args.dit_size}/2 on 32×32×3'}[args.network] + (
              f', {args.dtype}' if args.network != 'mlp' else '')


def main():
  ap = network_args(batch=4096, repeats=30)
  ap.add_argument('--warmup', type=int, default=3)
  ap.add_argument('--losses', default=','.join(LOSSES))
  args = ap.parse_args()
  names = args.losses.split(',')
  rows = {n: measure(n, args) for n in names}
  fm = rows['fm']
  lines = ['| loss | step time | time / fm | passes / fm | measured ÷ predicted | memory / fm | '
           'compile |', '|---|---|---|---|---|---|---|']
  for n, r in rows.items():
    t_ratio, p_ratio = r['time'] / fm['time'], r['passes'] / fm['passes']
    lines.append(f'| {n} | {r["time"] * 1e3:.1f} ms | {t_ratio:.2f}× | {p_ratio:.2f}× | '
                 f'{t_ratio / p_ratio:.2f} | {r["mem"] / fm["mem"]:.2f}× | {r["compile"]:.1f} s |')
  device = jax.devices()[0]
  machine = (f'{device.device_kind} ({jax.device_count()} device(s)), {platform.processor() or platform.machine()}, '
             f'jax {jax.__version__}')
  head = (f'{network_name(args)}, batch {args.batch}, diag_fraction {args.diag_fraction}; median of '
          f'{args.repeats} steps after compilation; {machine}.')
  table = '\n'.join(lines)
  print(head + '\n\n' + table)
  if args.results:
    from compare_2d import write_results  # pylint: disable=g-import-not-at-top
    write_results(f'Step cost per loss: {args.network} (step_cost.py, {device.platform})',
                  f'Command: `python benchmarks/step_cost.py --network {args.network} --batch '
                  f'{args.batch} --losses {args.losses} --repeats {args.repeats} --results`'
                  f'\n\n{head}\n\n{table}')


if __name__ == '__main__':
  main()
