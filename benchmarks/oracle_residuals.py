"""Prints each loss's deterministic residuals at the exact Gaussian-to-Gaussian flow map and at a map
about 5 % off (float64, docs/oracle.md). Run: python benchmarks/oracle_residuals.py"""
import os
import sys

import jax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tests'))
import gaussian_oracle as go  # noqa: E402
from flowmap_jax import config_io  # noqa: E402
from flowmap_jax import losses  # noqa: E402

VARIANTS = [('lmd', {}), ('emd', {}), ('itvm', {}), ('itvm', {'itvm.y_source': 'online'}),
            ('lsd', {}), ('esd', {}), ('psd', {}), ('psd', {'psd.gamma': 'uniform'})]
CASES = [([1.5], 1.0, 0.5), ([0.3, -1.0, 2.0], 1.0, 0.3)]


def main():
  print('| loss | term | d=1: exact / perturbed | d=3: exact / perturbed |')
  print('|---|---|---|---|')
  for name, overrides in VARIANTS:
    c = config_io.load('configs/itvm_checkerboard.py').loss
    c.diag_fraction = 0.25
    for k, v in overrides.items():
      sect, key = k.split('.')
      c[sect][key] = v
    cells = {'loss/diag': [], 'loss/offdiag': []}
    with jax.enable_x64(True):
      for case in CASES:
        truth = go.make(*case)
        x0, x1 = go.sample(jax.random.key(0), truth, 512)
        run = lambda p: losses.get(name)(go.average_velocity, p, x0, x1, jax.random.key(1),
                                         config=c, teacher=go.teacher(truth))[1]
        a, b = run(truth), run(go.perturb(truth))
        for k in cells:
          cells[k].append(f'{float(a[k]):.1e} / {float(b[k]):.2g}')
    label = name + ''.join(f' {k}={v}' for k, v in overrides.items())
    for k in (('loss/diag', 'loss/offdiag') if losses.spec(name).needs_teacher else ('loss/offdiag',)):
      print(f'| {label} | {k} | ' + ' | '.join(cells[k]) + ' |')


if __name__ == '__main__':
  main()
