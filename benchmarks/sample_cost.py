"""Sampling throughput: samples per second of the flow map at 1/2/4/8 steps and of the teacher's ODE
(Euler at the same NFEs and the adaptive solver), measured side by side in one process.

Throughput does not depend on what the weights have learned, except the adaptive solver's step count:
its NFE is reported with it (on untrained weights it is not the NFE of a trained teacher).

  python benchmarks/sample_cost.py --network mlp --batch 100000 --results
  python benchmarks/sample_cost.py --network unet --batch 16 --results
"""
import statistics
import time

import jax

from flowmap_jax import evaluate
from flowmap_jax import state as state_lib
from step_cost import config_for, machine, network_args, network_name, report


def timed(run, params, key, n, repeats):
  out = run(params, key, n)  # compile
  jax.block_until_ready(out)
  times = []
  for i in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(run(params, jax.random.fold_in(key, i), n))
    times.append(time.perf_counter() - t)
  nfe = float(out[1]) if isinstance(out, tuple) else None
  return statistics.median(times), nfe


def rate(r):
  """Samples/s with three significant digits whatever the network (200,000 or 0.873)."""
  return f'{r:,.0f}' if r >= 100 else f'{r:.3g}'


def main():
  args = network_args(batch=100_000, repeats=5).parse_args()
  c = config_for('itvm', args)
  c.eval.ode_rtol = c.eval.ode_atol = 1e-3
  exp = state_lib.Experiment(c)
  params = exp.init_params(jax.random.key(0))
  key = jax.random.key(1)
  rows = []
  for n in (1, 2, 4, 8):
    t, _ = timed(evaluate.sampler(exp, 'flow_map', n), params, key, args.batch, args.repeats)
    te, _ = timed(evaluate.sampler(exp, 'euler', n), params, key, args.batch, args.repeats)
    rows.append((f'{n}', t, te))
  t_ode, nfe = timed(evaluate.sampler(exp, 'ode'), params, key, args.batch, args.repeats)
  lines = ['| NFE | flow map samples/s | teacher Euler samples/s |', '|---|---|---|']
  lines += [f'| {n} | {rate(args.batch / t)} | {rate(args.batch / te)} |' for n, t, te in rows]
  lines.append(f'\nTeacher adaptive ODE ({c.eval.teacher_ode}, tolerance 1e-3, {nfe:.0f} NFE on '
               f'these untrained weights): {rate(args.batch / t_ode)} samples/s.')
  head = (f'{network_name(args)}, batch {args.batch}, median of {args.repeats} batches after '
          f'compilation; {machine()}.')
  report(f'Sampling throughput: {args.network} (sample_cost.py', head, '\n'.join(lines),
         args.results)


if __name__ == '__main__':
  main()
