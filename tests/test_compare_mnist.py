"""The MNIST study script: one teacher per seed, distillation students of it at the guidance of their
configs (the second reusing the first's scores of the guided teacher) and a self-distillation
student from scratch, the digit metrics in one table with the guided
and unguided teacher rows, a second invocation that trains nothing, and bad input answered with exit
code 2."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowmap_jax import config_io
from flowmap_jax.evaluation import digits

sys.path.insert(0, os.path.join(config_io.REPO_ROOT, 'benchmarks'))
import compare_mnist  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _files(tmp_path):
  """Random 'digits' (64, 28×28, labels 0-9) and a random-weight classifier over them."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
  np.savez(tmp_path / 'digits.npz', images=images, labels=np.arange(64) % 10)
  net = digits.DigitNet(10)
  params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.uint8))['params']
  reference = images[:32, ..., None]
  _, feats = digits.apply_fn({'params': params, 'num_classes': 10})(reference)
  feats = np.asarray(feats, np.float64)
  digits.save(str(tmp_path / 'digits.pickle'), params, feats.mean(0), np.cov(feats, rowvar=False),
              reference, 10, 0.1, 'random weights (test)')
  return str(tmp_path / 'digits.npz'), str(tmp_path / 'digits.pickle')


def _study(monkeypatch, capsys, *argv):
  monkeypatch.setattr(sys, 'argv', ['compare_mnist.py', *argv])
  compare_mnist.main()
  return capsys.readouterr().out


def test_study_distils_the_guided_teacher_trains_from_scratch_and_resumes(monkeypatch, capsys,
                                                                          tmp_path):
  data, classifier = _files(tmp_path)
  args = ['--workdir', str(tmp_path / 'study'), '--data', data, '--classifier', classifier,
          '--smoke', '--variants', 'lmd', 'emd', 'shortcut', '--num_samples', '8']
  out = _study(monkeypatch, capsys, *args)
  root = tmp_path / 'study' / 'seed0'
  lmd = json.loads((root / 'lmd' / 'config.json').read_text())
  assert lmd['loss']['name'] == 'lmd' and lmd['teacher']['guidance'] == 2.0
  assert lmd['data']['path'] == data and lmd['eval']['classifier'] == classifier
  assert json.loads((root / 'shortcut' / 'config.json').read_text())['teacher']['workdir'] == str(
      root / 'teacher')
  teacher = json.loads((root / 'teacher' / 'eval.json').read_text())
  assert teacher['estimator']['guidance'] == 1.0 and 'accuracy' in teacher['teacher_ode']
  for row in ('| lmd |', '| shortcut |', '| teacher Euler, guided w = 2 |',
              '| teacher ODE, guided w = 2 |', '| teacher Euler, unguided |',
              '| teacher ODE, unguided |'):
    assert row in out, out
  run = json.loads((root / 'lmd' / 'eval.json').read_text())
  m = run['flow_map']['1']
  line = next(l for l in out.splitlines() if l.startswith('| lmd |'))
  assert line.split('|')[2].strip() == (
      f'{100 * m["accuracy"]:.1f}% / {m["feature_distance"]:.1f} / {m["energy"]:.3f}')
  # emd scored the guided teacher from what lmd kept in the teacher's workdir, not again.
  emd = json.loads((root / 'emd' / 'eval.json').read_text())
  assert emd['teacher_source'] == str(root / 'teacher' / 'teacher_scores.json')
  assert emd['teacher_ode'] == run['teacher_ode'] and 'teacher_source' not in run
  for run_name in ('seed 0 teacher', 'seed 0 lmd', 'seed 0 emd', 'seed 0 shortcut'):
    assert f'] {run_name}: ' in out   # each run was trained, once
  again = _study(monkeypatch, capsys, *args, '--report')
  assert '] seed 0' not in again and line in again


def test_self_distillation_alone_trains_no_teacher_at_the_given_ema(monkeypatch, capsys, tmp_path):
  """So one process can train the teacher and its students while another trains from scratch."""
  data, classifier = _files(tmp_path)
  out = _study(monkeypatch, capsys, '--workdir', str(tmp_path / 'study'), '--data', data,
               '--classifier', classifier, '--smoke', '--variants', 'meanflow', '--num_samples', '8',
               '--eval_ema_rate', '0.9')
  assert '] seed 0 meanflow: ' in out and '| meanflow |' in out
  saved = json.loads((tmp_path / 'study' / 'seed0' / 'meanflow' / 'config.json').read_text())
  assert saved['train']['eval_ema_rates'] == [0.9]
  assert 'teacher' not in out and not (tmp_path / 'study' / 'seed0' / 'teacher').exists()


def test_bad_input_is_answered_with_exit_code_2(tmp_path):
  data, classifier = _files(tmp_path)
  script = os.path.join(config_io.REPO_ROOT, 'benchmarks', 'compare_mnist.py')
  cases = [(['--data', str(tmp_path / 'none.npz'), '--classifier', classifier],
            'none.npz is not a file'),
           (['--data', data, '--classifier', str(tmp_path)], 'make it with tools/'),
           (['--data', data, '--classifier', classifier, '--variants', 'nope'], "Unknown loss 'nope'"),
           (['--data', data, '--classifier', classifier, '--variants', 'esd'],
            'there is no configs/esd_mnist.py'),
           (['--data', data, '--classifier', classifier, '--variants', 'fm'],
            "'fm' learns no flow map: the teacher's rows are in every table")]
  for argv, message in cases:
    r = subprocess.run([sys.executable, script, '--workdir', str(tmp_path / 'w'), *argv],
                       capture_output=True, text=True, cwd=config_io.REPO_ROOT, check=False)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
