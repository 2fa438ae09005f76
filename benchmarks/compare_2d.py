"""The seven flow-map losses at one equal budget, on the same teacher and seeds (2-D checkerboard).

Every student starts from the teacher's weights (train.init_from_teacher) and trains the same number
of steps with the same batch, optimiser and seed; the table is KL(data ‖ model) at 1/2/4/8/16 steps
(docs/metrics.md). Writes the table to stdout and, with --results, into
benchmarks/RESULTS.md.

  python benchmarks/compare_2d.py --workdir runs/compare_2d --steps 3000 --results
"""
import argparse
import os
import re
import time

from flowmap_jax import config_io
from flowmap_jax import train

LOSSES = ['lmd', 'emd', 'itvm', 'lsd', 'esd', 'psd', 'meanflow']


def run(workdir, steps, lr, schedule, num_samples, only=None):
  """Every student shares one teacher, which the first one trains (as a user's run would:
  teacher.config on the student's data, into teacher.workdir)."""
  teacher_dir = os.path.join(workdir, 'teacher')
  rows, times = {}, {}
  for name in only or LOSSES:
    c = config_io.load(f'configs/{name}_checkerboard.py')
    c.teacher.config = 'configs/fm_checkerboard.py'
    c.teacher.workdir = teacher_dir
    c.train.init_from_teacher = True
    c.train.num_steps = steps
    c.optim.lr, c.optim.schedule = lr, schedule
    c.eval.num_samples = num_samples
    c.train.checkpoint_every = steps
    t0 = time.time()
    rows[name] = train.train_and_evaluate(c, os.path.join(workdir, name))
    times[name] = time.time() - t0
  return rows, times


def table(rows, times, steps):
  ref = next(iter(rows.values()))
  ns = ref['estimator']['steps']
  out = ['| loss | ' + ' | '.join(f'{n} step{"s" * (n > 1)}' for n in ns) + ' | wall time |',
         '|---' * (len(ns) + 2) + '|']
  for name, r in rows.items():
    out.append(f'| {name} | ' + ' | '.join(f'{r["flow_map"][str(n)]["kl"]:.4f}' for n in ns)
               + f' | {times[name]:.0f} s |')
  if 'teacher_euler' in ref:
    out.append('| teacher Euler (same NFE) | ' + ' | '.join(
        f'{ref["teacher_euler"][str(n)]["kl"]:.4f}' for n in ns) + ' | |')
    o = ref['teacher_ode']
    out.append(f'| teacher {ref["estimator"]["ode"]} ({o["nfe"]:.0f} NFE) | {o["kl"]:.4f} |'
               + ' |' * len(ns))
  out.append(f'| estimator floor | {ref["floor"]["kl"]:.4f} |' + ' |' * len(ns))
  return '\n'.join(out)


def write_results(section, body, path=os.path.join(os.path.dirname(__file__), 'RESULTS.md')):
  """Replaces (or appends) the `## section` of RESULTS.md."""
  text = open(path).read() if os.path.exists(path) else '# Benchmark results\n'
  block = f'## {section}\n\n{body.strip()}\n'
  pattern = re.compile(rf'^## {re.escape(section)}\n.*?(?=^## |\Z)', re.S | re.M)
  text = pattern.sub(lambda _: block + '\n', text) if pattern.search(text) else (
      text.rstrip() + '\n\n' + block)
  with open(path, 'w') as f:
    f.write(text)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', default='runs/compare_2d')
  ap.add_argument('--steps', type=int, default=3000)
  ap.add_argument('--lr', type=float, default=1e-3)
  ap.add_argument('--schedule', default='cosine')
  ap.add_argument('--num_samples', type=int, default=500_000)
  ap.add_argument('--losses', default=','.join(LOSSES))
  ap.add_argument('--results', action='store_true', help='write the table into RESULTS.md')
  args = ap.parse_args()
  t0 = time.time()
  rows, times = run(args.workdir, args.steps, args.lr, args.schedule, args.num_samples,
                    args.losses.split(','))
  md = table(rows, times, args.steps)
  print(md)
  total = time.time() - t0
  print(f'\nTotal wall time {total:.0f} s')
  if args.results:
    write_results('2-D: the seven losses at one budget (compare_2d.py)', (
        f'Command: `python benchmarks/compare_2d.py --workdir {args.workdir} --steps {args.steps} '
        f'--lr {args.lr} --schedule {args.schedule} '
        f'--num_samples {args.num_samples} '
        f'--results`\n\nCheckerboard, 4×256 MLP, batch 2048, every student from the teacher\'s '
        f'weights, {args.steps} steps at lr {args.lr} ({args.schedule}), each loss with its own '
        f'diag_fraction (distillation 0.5, self-distillation 0.75); KL(data ‖ model) on {args.num_samples:,} '
        f'samples. Total wall time {total:.0f} s on this machine (2 CPU cores), teacher '
        f'included.\n\n' + md))


if __name__ == '__main__':
  main()
