"""The 2-D study: flow-map losses at equal budget over data sets and seeds, resumable.

For each data set and seed, one teacher (trained by the first distillation student that needs it,
through the same teacher handling a user's run has: teacher.config with the student's data and seed)
is shared by every distillation student of that (data set, seed). Each run has its own workdir,
<workdir>/<data set>/seed<k>/<variant>, so an interrupted study picks up where it stopped: a run
whose eval.json is complete is skipped, an unfinished one resumes from its checkpoint.

A variant is a loss with options, "itvm" or "itvm u=s_plus_tau tau=0.1": a bare option names a field
of the loss's block (loss.itvm.u), a dotted one any config field (loss.diag_fraction=0.25).
Distillation variants start from their teacher's weights and train --steps; self-distillation
variants train --self_steps from scratch (each family at its own equal budget).

  python benchmarks/compare_2d.py --workdir /tmp/study --datasets checkerboard,spirals,two_moons \
      --seeds 0,1,2 --variants lmd emd itvm "itvm u=s_plus_tau" "itvm u=uniform" lsd esd psd meanflow \
      --results
  python benchmarks/compare_2d.py --workdir /tmp/study --datasets checkerboard --seeds 0 \
      --variants itvm lmd --convergence 1000,2000,4000,8000 --results

Prints mean ± standard deviation over seeds of KL(data ‖ model) at each step count
(docs/metrics.md), with the teacher's Euler at the same NFE, its adaptive ODE and the estimator
floor; --results writes the tables, plots (benchmarks/plots/) and the command into RESULTS.md,
keeping the section's hand-written `<!-- notes -->` block (write_results).
"""
import argparse
import json
import os
import re
import shlex
import sys
import time

import numpy as np

from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import train
from flowmap_jax import validate

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_variant(text):
  """'itvm u=s_plus_tau' -> ('itvm', {'loss.itvm.u': 's_plus_tau'})."""
  name, *options = text.split()
  losses.spec(name)  # an unknown loss fails here, before anything trains
  overrides = {}
  for option in options:
    key, value = option.split('=', 1)
    overrides[key if '.' in key else f'loss.{name}.{key}'] = value
  return name, overrides


def slug(text):
  return re.sub(r'[^A-Za-z0-9_.=-]+', '_', text.strip()).replace('=', '-')


def set_field(config, key, value):
  """config[key] = value, a string converted to the field's type."""
  *path, field = key.split('.')
  node = config
  for p in path:
    node = node[p]
  old = node[field]
  if isinstance(value, str) and not isinstance(old, str):
    value = {'True': True, 'False': False}[value] if isinstance(old, bool) else type(old)(value)
  node[field] = value


def set_steps(config, steps):
  """train.num_steps = steps; α-Flow's curriculum, when it spanned the whole run, still does."""
  a = config.loss.get('alphaflow')
  if a is not None and a.alpha_end_step == config.train.num_steps:
    a.alpha_end_step = steps
  config.train.num_steps = steps


def variant_config(variant, data, seed, args, steps=None):
  name, overrides = parse_variant(variant)
  distils = losses.spec(name).needs_teacher
  c = config_io.load(f'configs/{name}_checkerboard.py' + (':smoke' if args.smoke else ''))
  c.seed = seed
  c.data.name = data
  set_steps(c, steps or (args.steps if distils else args.self_steps))
  c.train.checkpoint_every = min(1000, c.train.num_steps)
  c.eval.num_samples = args.num_samples
  c.eval.steps = tuple(args.eval_steps)
  for key, value in overrides.items():
    set_field(c, key, value)
  return c


def finished(workdir, config):
  """The run's eval.json if it finished `config` itself. A run saved under this variant's name with a
  config that differs (say, a default changed since) is not this variant's result: it is skipped
  with the differences printed, so a table never shows it under a name that now means more."""
  path = os.path.join(workdir, 'eval.json')
  if not os.path.exists(path):
    return None
  diff = validate.config_differences(config, workdir)
  if diff:
    print(f'{workdir}: not this variant\'s run, its config differs: {", ".join(diff)}',
          flush=True)
    return None
  result = json.load(open(path))
  return result if result.get('step') == config.train.num_steps else None


def run_one(variant, data, seed, args, steps=None, tag=''):
  """The run's eval.json, training it first unless it is finished (with --report: None then)."""
  c = variant_config(variant, data, seed, args, steps)
  root = os.path.join(args.workdir, data, f'seed{seed}')
  c.teacher.workdir = os.path.join(root, 'teacher')
  return train_unless_finished(c, os.path.join(root, slug(variant) + tag), args.report,
                               f'{data} seed {seed} {variant}{tag}')


def train_unless_finished(config, workdir, report, label):
  """The run's eval.json, training it first unless it is finished (with `report`: None then)."""
  result = finished(workdir, config)
  if result is None and not report:
    t0 = time.time()
    result = train.train_and_evaluate(config, workdir)
    print(f'[{time.strftime("%H:%M:%S")}] {label}: {time.time() - t0:.0f} s', flush=True)
  return result


def teacher_result(data, seed, args):
  """The teacher's scores as its students see them (the teacher's own eval.json)."""
  path = os.path.join(args.workdir, data, f'seed{seed}', 'teacher', 'eval.json')
  return json.load(open(path)) if os.path.exists(path) else None


def mean_std(values):
  a = np.asarray(values, float)
  return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values, n_seeds=None):
  """mean ± std; a cell with fewer values than seeds says how many it has."""
  m, s = mean_std(values)
  text = f'{m:.4f} ± {s:.4f}' if len(values) > 1 else f'{m:.4f}'
  return text + (f' ({len(values)} of {n_seeds})' if n_seeds and len(values) < n_seeds else '')


def study(args):
  """{data: {row: {nfe: [kl per seed]}}} and the teacher rows."""
  table = {}
  for data in args.datasets:
    rows = table.setdefault(data, {})
    for seed in args.seeds:
      for variant in args.variants:
        r = run_one(variant, data, seed, args)
        if r is None:
          continue
        for n in args.eval_steps:
          rows.setdefault(variant, {}).setdefault(n, []).append(r['flow_map'][str(n)]['kl'])
      t = teacher_result(data, seed, args)
      if t is None or 'teacher_euler' not in t:
        continue
      for n in args.eval_steps:
        if str(n) in t['teacher_euler']:
          rows.setdefault('teacher Euler (same NFE)', {}).setdefault(n, []).append(
              t['teacher_euler'][str(n)]['kl'])
      rows.setdefault(f'teacher {t["estimator"]["ode"]} ODE', {}).setdefault(0, []).append(
          t['teacher_ode']['kl'])
      rows.setdefault('estimator floor', {}).setdefault(0, []).append(t['floor']['kl'])
  return table


def markdown(rows, nfes, n_seeds=None):
  out = ['| run | ' + ' | '.join(f'{n} NFE' for n in nfes) + ' |', '|---' * (len(nfes) + 1) + '|']
  for name, by_n in rows.items():
    if 0 in by_n:  # a single number (adaptive ODE, floor)
      out.append(f'| {name} | {fmt(by_n[0], n_seeds)} |' + ' |' * (len(nfes) - 1))
    else:
      out.append(f'| {name} | ' + ' | '.join(fmt(by_n[n], n_seeds) if n in by_n else ''
                                              for n in nfes) + ' |')
  return '\n'.join(out)


def plot(rows, nfes, title, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, by_n in rows.items():
    if 0 in by_n:
      m, _ = mean_std(by_n[0])
      ax.axhline(m, ls='--' if 'floor' in name else ':', color='gray', lw=1, label=name)
      continue
    ns = [n for n in nfes if n in by_n]
    stats = np.array([mean_std(by_n[n]) for n in ns])
    ax.plot(ns, stats[:, 0], marker='o', label=name)
    ax.fill_between(ns, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], alpha=0.2)
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('NFE (flow-map steps)')
  ax.set_ylabel('KL(data ‖ model)')
  ax.set_title(title)
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def convergence(args):
  """{variant: {steps: [1-step KL per seed]}} for the training budgets in --convergence."""
  rows = {}
  for data in args.datasets:
    for seed in args.seeds:
      for variant in args.variants:
        for steps in args.convergence:
          r = run_one(variant, data, seed, args, steps=steps, tag=f'@{steps}')
          if r is None:
            continue
          rows.setdefault(f'{data}: {variant}', {}).setdefault(steps, []).append(
              r['flow_map'][str(args.eval_steps[0])]['kl'])
  return rows


NOTES = re.compile(r'^<!-- notes -->\n.*?^<!-- /notes -->\n', re.S | re.M)


def write_results(section, body, path=os.path.join(HERE, 'RESULTS.md')):
  """Replaces (or appends) the `## section` of RESULTS.md. Hand-written text between the lines
  `<!-- notes -->` and `<!-- /notes -->` of the old section (a verdict, how the runs were made) is
  kept, before the new body's first `###` subsection, so regenerating the tables never drops it."""
  text = open(path).read() if os.path.exists(path) else '# Benchmark results\n'
  pattern = re.compile(rf'^## {re.escape(section)}\n.*?(?=^## |\Z)', re.S | re.M)
  old = pattern.search(text)
  notes = NOTES.search(old.group(0)) if old else None
  body = body.strip() + '\n'
  if notes:
    head, sub, rest = body.partition('\n### ')
    body = f'{head.rstrip()}\n\n{notes.group(0)}' + (f'\n### {rest}' if sub else '')
  block = f'## {section}\n\n{body}'
  text = pattern.sub(lambda _: block + '\n', text) if old else text.rstrip() + '\n\n' + block
  with open(path, 'w') as f:
    f.write(text)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(x) for x in s.split(',')]
  ap.add_argument('--workdir', required=True, help='study root (outside the repository)')
  ap.add_argument('--datasets', default='checkerboard', type=lambda s: s.split(','))
  ap.add_argument('--seeds', default='0', type=ints)
  ap.add_argument('--variants', nargs='+', default=['lmd', 'emd', 'itvm'])
  ap.add_argument('--steps', type=int, default=4000, help='distillation steps')
  ap.add_argument('--self_steps', type=int, default=8000, help='self-distillation steps')
  ap.add_argument('--num_samples', type=int, default=500_000)
  ap.add_argument('--eval_steps', default='1,2,4,8', type=ints)
  ap.add_argument('--smoke', action='store_true', help='the :smoke configs (tests)')
  ap.add_argument('--report', action='store_true',
                  help='train nothing: tables of the finished runs only (counts in each cell)')
  ap.add_argument('--convergence', type=ints, default=None,
                  help='training budgets: 1-step KL against steps instead of the study')
  ap.add_argument('--results', action='store_true', help='write tables and plots into RESULTS.md')
  ap.add_argument('--section', default='', help="RESULTS.md section title (default: the study's "
                  'budget)')
  args = ap.parse_args()
  command = 'python benchmarks/compare_2d.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  t0 = time.time()
  seeds = f'{len(args.seeds)} seed{"s" * (len(args.seeds) > 1)} ({", ".join(map(str, args.seeds))})'
  if args.convergence:
    rows = convergence(args)
    md = markdown(rows, args.convergence, len(args.seeds)).replace(' NFE |', ' steps |')
    print(md)
    if args.results:
      write_results('2-D study: convergence of the 1-step KL', (
          f'Command: `{command}`\n\n{args.eval_steps[0]}-step KL(data ‖ model) on '
          f'{args.num_samples:,} samples after each training budget (each its own run, its '
          f'schedule over that budget), mean ± std over {seeds}.\n\n' + md))
    return
  table = study(args)
  sections = []
  for data, rows in table.items():
    md = markdown(rows, args.eval_steps, len(args.seeds))
    print(f'\n{data}\n{md}')
    if args.results:
      # A named section gets plots of its own, so it never overwrites the study's.
      name = f'study_{data}_{args.steps}' + (f'_{slug(args.section)[:48]}' if args.section else '')
      png = os.path.join(HERE, 'plots', f'{name}.png')
      have = sorted({len(v) for by_n in rows.values() for v in by_n.values()}) or [0]
      seeds_shown = (f'{have[0]}' if have[0] == have[-1] else f'{have[0]}-{have[-1]}')
      plot(rows, args.eval_steps, f'{data}, mean ± std over {seeds_shown} seeds', png)
      sections.append(f'### {data}\n\n{md}\n\n![{data}](plots/{name}.png)')
  total = time.time() - t0
  print(f'\nWall time of this invocation {total:.0f} s')
  if args.results:
    write_results(args.section or f'2-D study at {args.steps} distillation steps: the losses over '
                  'data sets and seeds', (
        f'Command: `{command}`\n\nKL(data ‖ model) on {args.num_samples:,} samples, mean ± std '
        f'over {seeds}; 4×256 MLP, batch 2048; distillation: {args.steps} steps from the '
        f"teacher's weights; self-distillation: {args.self_steps} steps from scratch; each loss "
        'with its config\'s schedule (cosine decay from 1e-3).\n\n' + '\n\n'.join(sections)))


if __name__ == '__main__':
  main()
