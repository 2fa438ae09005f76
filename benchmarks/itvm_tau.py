"""ITVM's τ against the teacher's Euler at 1/τ steps: is ITVM's bias a discretisation of step τ?

ITVM with u = max(s, t − τ) builds X(s, t) from X(s, u) and a last segment of length τ whose average
velocity v(u, t, y) is itself only ever fitted through the blind spot (pairs with t − s ≤ τ have
u = s: their terminal term pulls v_θ towards v_θ⁻ and nothing else) and through the initial-velocity
term v(s, s, ·) = b_s (docs/itvm.md, "Why ITVM trails LMD"). If that is the whole story, the fixed
point ITVM can reach is a τ-step integrator of the teacher's ODE, and its KL should track the teacher's
Euler KL at round(1/τ) steps as τ changes, where LMD (exact ODE condition ∂_t X = b_t(X)) has no τ.

For each data set and seed this script trains (or reads, resumably, in the compare_2d layout)
`itvm ema_rate=0.9 short_target=terminal tau=τ` (or `--short_target heun`) for each τ, and scores
the teacher's Euler at round(1/τ) steps with the same estimator, data draw and noise as the runs'
own evaluation (evaluate.evaluate).

  python benchmarks/itvm_tau.py --workdir /tmp/study8k --datasets checkerboard,spirals,two_moons \
      --seeds 0 --taus 0.025,0.05,0.1 --steps 8000 --results
"""
import argparse
import os
import shlex
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_2d  # pylint: disable=g-import-not-at-top,wrong-import-position

from flowmap_jax import evaluate  # pylint: disable=wrong-import-position
from flowmap_jax import teacher as teacher_lib  # pylint: disable=wrong-import-position
from flowmap_jax.losses import itvm  # pylint: disable=wrong-import-position


def variant(tau, short_target='terminal'):
  """The study's name for ITVM at τ, every option spelled out so that a later change of ITVM's
  defaults cannot change what the name means."""
  return f'itvm ema_rate=0.9 short_target={short_target} tau={tau:g}'


def teacher_reference(data_name, seed, args):
  """The (data, seed) teacher and the draws its runs were scored on (evaluate.draws): read once per
  (data set, seed), whatever the number of τ."""
  c = compare_2d.variant_config(variant(0.05), data_name, seed, args)  # only its teacher is read
  root = os.path.join(args.workdir, data_name, f'seed{seed}')
  c.teacher.workdir = os.path.join(root, 'teacher')
  teacher = teacher_lib.load(c, os.path.join(root, 'unused'), require_existing=True)
  data, _, k_noise = evaluate.draws(c)
  return teacher.exp, jax.device_get(teacher.params), c.eval, data, k_noise


def teacher_euler_kl(reference, num_steps):
  """KL of the teacher's Euler at `num_steps`, drawn and scored as evaluate.evaluate does."""
  texp, tparams, e, data, k_noise = reference
  x = evaluate.euler_samples(texp, tparams, k_noise, e.num_samples, num_steps, e.batch_size)
  return evaluate.scores(data, x, e.energy_samples)['kl']


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', required=True, help='study root (compare_2d layout)')
  ap.add_argument('--datasets', default='checkerboard,spirals,two_moons',
                  type=lambda s: s.split(','))
  ap.add_argument('--seeds', default='0', type=lambda s: [int(x) for x in s.split(',')])
  ap.add_argument('--taus', default='0.025,0.05,0.1',
                  type=lambda s: [float(x) for x in s.split(',')])
  ap.add_argument('--steps', type=int, default=8000, help='distillation steps')
  ap.add_argument('--short_target', default='terminal',
                  choices=itvm.OPTIONS['short_target'].choices,
                  help="ITVM's pairs with t − s ≤ τ: 'terminal' (the blind spot measured) or 'heun'")
  ap.add_argument('--num_samples', type=int, default=500_000)
  ap.add_argument('--eval_steps', default='1,2,4,8', type=lambda s: [int(x) for x in s.split(',')])
  ap.add_argument('--smoke', action='store_true', help='the :smoke configs (tests)')
  ap.add_argument('--report', action='store_true', help='train nothing: finished runs only')
  ap.add_argument('--results', action='store_true', help='write the table into RESULTS.md')
  args = ap.parse_args()
  args.self_steps = args.steps
  command = 'python benchmarks/itvm_tau.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  t0 = time.time()
  nfes = args.eval_steps
  head = ('| data set | τ | ITVM ' + ' | ITVM '.join(f'{n} NFE' for n in nfes)
          + ' | teacher Euler at 1/τ steps | LMD 1 NFE |')
  lines = [head, '|---' * (len(nfes) + 4) + '|']
  for data_name in args.datasets:
    for seed in args.seeds:
      lmd = compare_2d.run_one('lmd', data_name, seed, argparse.Namespace(**{**vars(args),
                                                                             'report': True}))
      reference = None
      for tau in args.taus:
        r = compare_2d.run_one(variant(tau, args.short_target), data_name, seed, args)
        if r is None:
          continue
        reference = reference or teacher_reference(data_name, seed, args)
        euler = teacher_euler_kl(reference, round(1 / tau))
        cells = ' | '.join(f'{r["flow_map"][str(n)]["kl"]:.3f}' for n in nfes)
        lmd_cell = f'{lmd["flow_map"]["1"]["kl"]:.3f}' if lmd else ''
        lines.append(f'| {data_name} (seed {seed}) | {tau:g} | {cells} | {euler:.3f} '
                     f'({round(1 / tau)} steps) | {lmd_cell} |')
        print(lines[-1], flush=True)
  md = '\n'.join(lines)
  print(f'\n{md}\n\nWall time {time.time() - t0:.0f} s')
  if args.results:
    compare_2d.write_results(
        f'ITVM: τ against the teacher\'s Euler at 1/τ steps ({args.steps} distillation steps)', (
            f'Command: `{command}`\n\nKL(data ‖ model) on {args.num_samples:,} samples; ITVM '
            f'at target EMA 0.9 with u = max(s, t − τ), short_target={args.short_target}; the '
            'teacher\'s Euler at round(1/τ) steps with the runs\' own data draw and noise; LMD at '
            'the same budget for scale.\n\n' + md))


if __name__ == '__main__':
  main()
