"""The MNIST study: distillation from one guided teacher and self-distillation from scratch, each
family at one step budget, scored by the digit classifier; resumable.

  python tools/train_digit_classifier.py --train mnist_train.npz --test mnist_test.npz \
      --out digits.pickle --steps 1500
  python benchmarks/compare_mnist.py --workdir /tmp/mnist --data mnist_train.npz \
      --classifier digits.pickle --seeds 0 \
      --variants lmd emd itvm lsd psd meanflow shortcut tvm imeanflow alphaflow --results

For each seed, <workdir>/seed<k>/teacher is configs/fm_mnist.py (its own evaluation unguided), trained
first; <workdir>/seed<k>/<variant> is configs/<loss>_mnist.py with the variant's options (written as
in compare_2d.py: "tvm cfg=2", "meanflow loss.diag_fraction=0.5"). Distillation variants start from
the teacher's weights and distil it at their config's teacher.guidance (w = 2 in lmd/emd/itvm_mnist)
for --steps; self-distillation variants train --self_steps from scratch. A run whose eval.json is
complete is skipped, an unfinished one resumes from its checkpoint. The first distillation run scores
the guided teacher and keeps the scores in the teacher's teacher_scores.json for the others. With only
self-distillation variants no teacher is trained (its rows are shown when a finished one is there),
so one process can run the teacher and its students while another, on the other core, runs the
losses from scratch.

Prints, and with --results writes into RESULTS.md (keeping its `<!-- notes -->`), one table: digit
accuracy / feature distance / pixel energy (docs/metrics.md) at each NFE, means over seeds (the
accuracy's std in brackets with several), then the guided teacher's Euler and adaptive ODE (from the
first distillation run that scored them) and the unguided teacher's own; and each variant's sample
grid of its first seed as benchmarks/plots/mnist_study_<variant>.png.
"""
import argparse
import os
import shlex
import shutil
import sys

import numpy as np

from flowmap_jax import config_io
from flowmap_jax import losses

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_2d  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

METRICS = ('accuracy', 'feature_distance', 'energy')


def _config(path, seed, args, steps=None):
  c = config_io.load(path + (':smoke' if args.smoke else ''))
  c.seed = seed
  c.data.path = os.path.abspath(args.data)
  c.eval.classifier = os.path.abspath(args.classifier)
  c.eval.fid_samples = args.num_samples
  if args.eval_steps:
    c.eval.steps = tuple(args.eval_steps)
  if steps:
    compare_2d.set_steps(c, steps)
    c.train.checkpoint_every = min(c.train.checkpoint_every, steps)
  return c


def variant_config(variant, seed, args):
  name, overrides = compare_2d.parse_variant(variant)
  path = os.path.join('configs', f'{name}_mnist.py')
  distils = losses.spec(name).needs_teacher
  c = _config(path, seed, args, args.steps if distils else args.self_steps)
  if args.eval_ema_rate:
    c.train.eval_ema_rates = (args.eval_ema_rate,)
  for key, value in overrides.items():
    compare_2d.set_field(c, key, value)
  return c


def _metrics(by_n, name, n, m, *extra):
  by_n.setdefault(name, {}).setdefault(n, []).append(tuple(m[k] for k in METRICS) + extra)


def study(args):
  """({row: {nfe: [(accuracy, feature distance, energy) per seed]}}, {variant: grid png})."""
  rows, grids = {}, {}
  # Self-distillation alone needs no teacher: its rows are shown when a finished one is there, so
  # one process can train the teacher and the distillations while another trains from scratch.
  distils = any(losses.spec(compare_2d.parse_variant(v)[0]).needs_teacher for v in args.variants)
  for seed in args.seeds:
    root = os.path.join(args.workdir, f'seed{seed}')
    teacher_dir = os.path.join(root, 'teacher')
    teacher = compare_2d.train_unless_finished(
        _config(os.path.join('configs', 'fm_mnist.py'), seed, args, args.teacher_steps),
        teacher_dir, args.report or not distils, f'seed {seed} teacher')
    guided = None   # the first distillation run's scores of the teacher at its guidance
    for variant in args.variants:
      c = variant_config(variant, seed, args)
      if teacher is None and losses.spec(c.loss.name).needs_teacher:
        continue   # --report before the teacher finished
      c.teacher.workdir = teacher_dir
      workdir = os.path.join(root, compare_2d.slug(variant))
      r = compare_2d.train_unless_finished(c, workdir, args.report, f'seed {seed} {variant}')
      if r is None:
        continue
      for n, m in r['flow_map'].items():
        _metrics(rows, variant, int(n), m)
      grids.setdefault(variant, os.path.join(workdir, 'plots', 'samples.png'))
      if guided is None and 'teacher_ode' in r:
        guided = r
    references = ([(f'guided w = {guided["estimator"]["guidance"]:g}', guided)] if guided else [])
    for label, r in references + ([('unguided', teacher)] if teacher else []):
      for n, m in r['teacher_euler'].items():
        _metrics(rows, f'teacher Euler, {label}', int(n), m)
      _metrics(rows, f'teacher ODE, {label}', 0, r['teacher_ode'],
               r['teacher_ode'].get('nfe', np.nan))
  return rows, grids


def cell(values, n_seeds):
  a = np.asarray(values, float)
  m = a.mean(0)
  acc = f'{100 * m[0]:.1f}%' + (f' (± {100 * a[:, 0].std(ddof=1):.1f})' if len(a) > 1 else '')
  text = f'{acc} / {m[1]:.1f} / {m[2]:.3f}'
  if a.shape[1] > 3 and np.isfinite(m[3]):
    text += f' ({m[3]:.0f} NFE)'
  return text + (f' ({len(a)} of {n_seeds} seeds)' if len(a) < n_seeds else '')


def markdown(rows, nfes, n_seeds):
  out = ['| run | ' + ' | '.join(f'{n} NFE' for n in nfes) + ' |', '|---' * (len(nfes) + 1) + '|']
  for name, by_n in rows.items():
    if 0 in by_n:
      out.append(f'| {name} | {cell(by_n[0], n_seeds)} |' + ' |' * (len(nfes) - 1))
    else:
      out.append(f'| {name} | ' + ' | '.join(cell(by_n[n], n_seeds) if n in by_n else ''
                                              for n in nfes) + ' |')
  return '\n'.join(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ints = lambda s: [int(x) for x in s.split(',')]
  ap.add_argument('--workdir', required=True, help='study root (outside the repository)')
  ap.add_argument('--data', required=True, help="training digits, an .npz of data.name='npz'")
  ap.add_argument('--classifier', required=True,
                  help='the digit classifier (tools/train_digit_classifier.py)')
  ap.add_argument('--seeds', default='0', type=ints)
  ap.add_argument('--variants', nargs='+', default=[
      'lmd', 'emd', 'itvm', 'lsd', 'psd', 'meanflow', 'shortcut', 'tvm', 'imeanflow', 'alphaflow'])
  ap.add_argument('--teacher_steps', type=int, default=None, help="default: fm_mnist's (3000)")
  ap.add_argument('--steps', type=int, default=None, help="distillation steps (default: the "
                  "configs', 1000)")
  ap.add_argument('--self_steps', type=int, default=None, help='self-distillation steps (default: '
                  "the configs', 3000)")
  ap.add_argument('--eval_ema_rate', type=float, default=None,
                  help="the students' evaluation EMA (default: the configs' slowest, 0.995, which "
                  'after 500 steps from scratch still holds 8 %% of the random initialisation)')
  ap.add_argument('--num_samples', type=int, default=1000)
  ap.add_argument('--eval_steps', default=None, type=ints, help="default: the configs' 1,2,4,8")
  ap.add_argument('--smoke', action='store_true', help='the :smoke configs (tests)')
  ap.add_argument('--report', action='store_true', help='train nothing: tables of finished runs')
  ap.add_argument('--results', action='store_true', help='write the table and grids into RESULTS.md')
  ap.add_argument('--section', default='MNIST study: the losses at equal budget')
  args = ap.parse_args()
  for flag, path in (('--data', args.data), ('--classifier', args.classifier)):
    if not os.path.isfile(path):
      ap.error(f'{flag} {path} is not a file' + (
          ': make it with tools/train_digit_classifier.py' if flag == '--classifier' else ''))
  for variant in args.variants:
    try:
      name, _ = compare_2d.parse_variant(variant)
    except (KeyError, ValueError) as e:
      ap.error(f'variant {variant!r}: {e}')
    if not losses.spec(name).learns_flow_map:
      ap.error(f"variant {variant!r}: {name!r} learns no flow map: the teacher's rows are in every "
               'table')
    if not os.path.exists(os.path.join(config_io.REPO_ROOT, 'configs', f'{name}_mnist.py')):
      ap.error(f'variant {variant!r}: there is no configs/{name}_mnist.py')
  command = 'python benchmarks/compare_mnist.py ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  os.chdir(config_io.REPO_ROOT)
  rows, grids = study(args)
  nfes = sorted({n for by_n in rows.values() for n in by_n if n})
  md = markdown(rows, nfes, len(args.seeds))
  print(md)
  if args.results:
    shown = []
    for variant, png in grids.items():
      if os.path.exists(png):
        name = f'mnist_study_{compare_2d.slug(variant)}.png'
        shutil.copy(png, os.path.join(HERE, 'plots', name))
        shown.append(f'![{variant}](plots/{name})')
    seeds = ', '.join(map(str, args.seeds))
    compare_2d.write_results(args.section, (
        f'Command: `{command}`\n\nDigit accuracy / feature distance / pixel energy on '
        f'{args.num_samples} samples per cell, means over seed(s) {seeds}; distillation from the '
        "teacher's weights at its guidance, self-distillation from scratch, each variant's config "
        'and options as named.\n\n### table\n\n' + md + '\n\nSample grids (rows 1, 2, 4, 8 steps, '
        'one column per digit, seed ' + str(args.seeds[0]) + '):\n\n' + ' '.join(shown)))


if __name__ == '__main__':
  main()
