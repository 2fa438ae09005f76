"""Every loss's training-step cost relative to flow matching, measured side by side in one process.

For each loss: median step time after compilation (all losses compiled first, then stepped in
turn, so they share the machine's state), XLA's memory estimate of the compiled step
(`compiled.memory_analysis()`: temporaries + outputs), what autodiff keeps for the backward pass (the
residuals of `jax.vjp` of the loss, parameters included: the activation memory that `model.remat`
trades for recomputation, independent of the backend's scheduler), compile time, and the network
passes the loss costs in forward-equivalents (a forward 1, a backward 2, a jvp 2 and its backward 4;
frozen teacher and EMA evaluations are forwards), each relative to fm. Prints a Markdown table;
--results writes it into benchmarks/RESULTS.md.

  python benchmarks/step_cost.py --network mlp --batch 4096 --results
  python benchmarks/step_cost.py --network unet --batch 8 --repeats 5 --results  # CIFAR-10 U-Net
  python benchmarks/step_cost.py --network dit --batch 4 --repeats 5 --results   # DiT-S/2
  python benchmarks/step_cost.py --network unet --batch 8 --remat full --losses fm,itvm --results
"""
import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import jax
import numpy as np

from flowmap_jax import config_io
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib

LOSSES = ['fm', 'lmd', 'emd', 'itvm', 'lsd', 'esd', 'psd', 'meanflow', 'imeanflow', 'alphaflow',
          'shortcut', 'tvm']


def passes(name, d):
  """Forward-equivalents per example at diag_fraction d (o = 1 − d off-diagonal), from each loss's
  code: F fwd = 1, fwd+bwd = 3, jvp = 2, jvp + its bwd = 6 (meanflow: bwd through the primal only, 4)."""
  o = 1 - d
  return {
      'fm': 3.0,
      'lmd': 3 * d + d + 6 * o + o,            # diag fwd+bwd, teacher on diag; jvp+bwd, teacher(X)
      'emd': 3 * d + d + o + 6 * o,            # diag fwd+bwd, teacher on diag; teacher b_s, jvp+bwd
      # one online call on B + o·B, teacher on B, 2 EMA fwds, the teacher's Heun step on o·B (heun)
      'itvm': 3 * (1 + o) + 1 + 3 * o,
      'lsd': 3 * d + 6 * o + o,                # diag FM; jvp+bwd; target v(t,t,X)
      'esd': 3 * d + o + 6 * o + 2 * o,        # diag FM; v(s,s); jvp over s + bwd; jvp over x (sg)
      'psd': 3.0 + 2 * o,                      # one fwd+bwd on B; two target fwds
      'meanflow': 3 * d + 4 * o,               # diag FM; jvp with bwd through v only
      'imeanflow': 3.0 + 4 * o,                # v(s,s) fwd+bwd on B (its tangent); jvp, bwd via v
      # α > 0 (the curriculum's start, and these steps: the state's step is 0): diag FM; fwd+bwd
      # and the target's fwd. At α = 0 the jvp with bwd through v only: the same 4. (On the CPU
      # backend both branches run, a select picks one: alphaflow.branch; counted here as one.)
      'alphaflow': 3 * d + 4 * o,
      'shortcut': 3.0 + 2 * o,                 # one fwd+bwd on B; two target-EMA fwds (no jvp)
      'tvm': 10.0,                             # every example: jvp+bwd, target fwd, FM fwd+bwd
  }[name]


def config_for(name, args):
  """The 2-D default's MLP, or the CIFAR-10 experiment's network (U-Net, or DiT-S/2 on it)."""
  if args.network == 'mlp':
    c = config_io.load('configs/itvm_checkerboard.py')
    c.model.mlp.width, c.model.mlp.depth = args.width, args.depth
  else:
    c = config_io.load('configs/itvm_cifar10.py')
    if args.network == 'dit':
      c.model.name, c.model.dit.size, c.model.dit.patch_size = 'dit', args.dit_size, 2
    c.model.dtype, c.model.remat = args.dtype, args.remat
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


def residual_bytes(exp, state, batch, teacher):
  """Bytes of the residuals `jax.vjp` of this step's loss keeps for its backward (traced only)."""
  def vjp_fn(state, batch, teacher):
    loss_of = step_lib.loss_of_params(exp, state, batch, teacher, teacher_lib.velocity_fn(exp))
    return jax.vjp(loss_of, state.params, has_aux=True)[1]
  leaves = jax.tree.leaves(jax.eval_shape(vjp_fn, state, batch, teacher))
  return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves)


def prepare(name, args):
  """Compiles one loss's train step; returns its costs known before running and `step()`, which
  runs one step and returns its wall time."""
  c = config_for(name, args)
  exp = state_lib.Experiment(c)
  state = exp.init_state()
  teacher = exp.init_params(jax.random.key(1)) if exp.loss.needs_teacher else None
  batch = batch_for(exp, args)
  t0 = time.time()
  step_fn = step_lib.jit_train_step(exp, teacher_lib.velocity_fn(exp))
  compiled = step_fn.lower(state, batch, teacher).compile()
  compile_s = time.time() - t0
  mem = compiled.memory_analysis()
  carry = {'state': state}

  def step():
    t = time.perf_counter()
    carry['state'], _ = compiled(carry['state'], batch, teacher)  # the old state is donated
    jax.block_until_ready(carry['state'])
    return time.perf_counter() - t

  return {'step': step, 'compile': compile_s,
          'mem': mem.temp_size_in_bytes + mem.output_size_in_bytes if mem else float('nan'),
          'residuals': residual_bytes(exp, state, batch, teacher),
          'passes': passes(name, args.diag_fraction)}


def measure(names, args):
  """Every loss compiled first, then timed round-robin (one step of each in turn, `repeats`
  rounds): drift of the machine and the first-measured penalty fall on every loss alike."""
  rows = {n: prepare(n, args) for n in names}
  times = {n: [] for n in names}
  for i in range(args.warmup + args.repeats):
    for n, r in rows.items():
      dt = r['step']()
      if i >= args.warmup:
        times[n].append(dt)
  for n, r in rows.items():
    r['time'] = statistics.median(times[n])
  return rows


def network_args(batch, repeats):
  """The arguments `config_for` reads, shared with sample_cost.py."""
  ap = argparse.ArgumentParser()
  ap.add_argument('--network', default='mlp', choices=['mlp', 'unet', 'dit'])
  ap.add_argument('--dit_size', default='S')
  ap.add_argument('--dtype', default='float32', help='image networks: float32 | bfloat16')
  ap.add_argument('--remat', default='none', help='image networks: none | full | dots')
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
              f', {args.dtype}, remat {args.remat}' if args.network != 'mlp' else '')


def main():
  ap = network_args(batch=4096, repeats=30)
  ap.add_argument('--warmup', type=int, default=3)
  ap.add_argument('--losses', default=','.join(LOSSES))
  args = ap.parse_args()
  names = args.losses.split(',')
  rows = measure(names, args)
  fm = rows['fm']
  lines = ['| loss | step time | time / fm | passes / fm | measured ÷ predicted | memory / fm | '
           'kept for backward | compile |', '|---|---|---|---|---|---|---|---|']
  for n, r in rows.items():
    t_ratio, p_ratio = r['time'] / fm['time'], r['passes'] / fm['passes']
    lines.append(f'| {n} | {r["time"] * 1e3:.1f} ms | {t_ratio:.2f}× | {p_ratio:.2f}× | '
                 f'{t_ratio / p_ratio:.2f} | {r["mem"] / fm["mem"]:.2f}× | '
                 f'{r["residuals"] / 2**20:.0f} MB ({r["residuals"] / fm["residuals"]:.2f}×) | '
                 f'{r["compile"]:.1f} s |')
  head = (f'{network_name(args)}, batch {args.batch}, diag_fraction {args.diag_fraction}; median of '
          f'{args.repeats} round-robin rounds after {args.warmup} warm-up rounds; XLA peak estimate '
          f'of fm {fm["mem"] / 2**20:.0f} MB; {machine()}.')
  report(f'Step cost per loss: {args.network}' + (f', remat {args.remat}' if args.remat != 'none'
                                                  else '') + ' (step_cost.py',
         head, '\n'.join(lines), args.results)


def machine():
  device = jax.devices()[0]
  return (f'{device.device_kind} ({jax.device_count()} device(s)), '
          f'{platform.processor() or platform.machine()}, jax {jax.__version__}')


def report(section, head, table, results):
  """Prints the table; with --results, writes it and the exact command line into RESULTS.md under
  `## {section}, <platform>)` (shared with sample_cost.py)."""
  print(head + '\n\n' + table)
  if results:
    from compare_2d import write_results  # pylint: disable=g-import-not-at-top
    write_results(f'{section}, {jax.devices()[0].platform})',
                  f'Command: `python {shlex.join([script_path()] + sys.argv[1:])}`'
                  f'\n\n{head}\n\n{table}')


def script_path():
  """This script as `benchmarks/<name>.py`, from the repository root, wherever it was run from."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.relpath(os.path.abspath(sys.argv[0]), root)


if __name__ == '__main__':
  main()
