"""The whole 2-D pipeline on the :smoke configs: train, checkpoint, resume, evaluate, log."""
import glob
import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import state as state_lib
from flowmap_jax import train
import entry_point

CONFIGS_2D = ['fm', 'itvm', 'lmd', 'emd', 'lsd', 'esd', 'psd', 'meanflow']
REPO = config_io.REPO_ROOT


def smoke(name, **overrides):
  c = config_io.load(f'configs/{name}_checkerboard.py:smoke')
  for k, v in overrides.items():
    node = c
    *path, last = k.split('.')
    for p in path:
      node = node[p]
    node[last] = v
  return c


def run_main(*args, env=None, timeout=600):
  """`python -m flowmap_jax.main ARGS` on one CPU device, forked from the session's warm driver
  (tests/entry_point.py): the entry point as a user runs it, without the interpreter's start."""
  return entry_point.run_main(*args, env=env, timeout=timeout)


@pytest.mark.parametrize('name', CONFIGS_2D)
def test_every_2d_config_trains_and_writes_eval(name, teacher_dir, tmp_path):
  config = smoke(name, **{'teacher.workdir': teacher_dir, 'teacher.require_existing': True})
  results = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / 'eval.json') as f:
    saved = json.load(f)
  assert saved['step'] == config.train.num_steps
  assert {'kl', 'energy'} <= set(saved['floor'])
  if name == 'fm':
    assert 'flow_map' not in saved and set(saved['teacher_euler']) == {'1', '2'}
  else:
    assert set(saved['flow_map']) == {'1', '2'}
    assert all(np.isfinite(v['kl']) and v['kl'] > 0 for v in saved['flow_map'].values())
  distils = name in ('itvm', 'lmd', 'emd')
  assert ('teacher_ode' in saved) == (distils or name == 'fm')
  if distils:  # the shared teacher was evaluated once, by its own run
    assert saved['teacher_source'] == os.path.join(teacher_dir, 'eval.json')
  assert results['step'] == saved['step']
  assert (tmp_path / 'eval.md').exists() and (tmp_path / 'plots' / 'samples.png').exists()


def _final_params(workdir, config):
  exp = state_lib.Experiment(config)
  mngr = checkpoint.manager(workdir)
  state = checkpoint.restore_latest(mngr, exp.abstract_state())
  mngr.close()
  return int(state.step), jax.device_get(state.params), jax.device_get(state.target_ema)


def test_resume_after_kill_matches_uninterrupted_run(teacher_dir, tmp_path):
  """A run killed (SIGKILL) after its first checkpoint and started again ends where an uninterrupted
  run of the same length ends, bit for bit."""
  steps, every = 300, 100
  overrides = [f'--config.teacher.workdir={teacher_dir}', f'--config.train.num_steps={steps}',
               f'--config.train.checkpoint_every={every}', '--config.train.log_every=50',
               '--config.eval.steps=(1,)']
  killed = tmp_path / 'killed'
  proc = entry_point.start_main('--config=configs/itvm_checkerboard.py:smoke',
                                f'--workdir={killed}', *overrides)
  deadline = time.time() + 300
  while not glob.glob(str(killed / 'checkpoints' / str(every))) and time.time() < deadline:
    assert proc.poll() is None, 'the run ended before its first checkpoint'
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / 'eval.json').exists(), 'killed too late to test a resume'
  r = run_main('--config=configs/itvm_checkerboard.py:smoke', f'--workdir={killed}', *overrides)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resuming' in r.stderr

  # The uninterrupted run in the same kind of process (one CPU device), so the same programs run.
  straight = tmp_path / 'straight'
  r = run_main('--config=configs/itvm_checkerboard.py:smoke', f'--workdir={straight}', *overrides)
  assert r.returncode == 0, r.stderr[-3000:]
  config = smoke('itvm', **{'teacher.workdir': teacher_dir, 'train.num_steps': steps})
  a, b = _final_params(str(killed), config), _final_params(str(straight), config)
  assert a[0] == b[0] == steps
  for x, y in zip(jax.tree.leaves(a[1:]), jax.tree.leaves(b[1:])):
    np.testing.assert_array_equal(x, y)


def test_mode_eval_reproduces_eval_json(teacher_dir, tmp_path):
  args = ['--config=configs/lsd_checkerboard.py:smoke', f'--workdir={tmp_path}']
  assert run_main(*args).returncode == 0
  first = json.loads((tmp_path / 'eval.json').read_text())
  (tmp_path / 'eval.json').unlink()
  r = run_main(*args, '--mode=eval')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((tmp_path / 'eval.json').read_text()) == first


def test_missing_teacher_with_require_existing_names_the_path(tmp_path):
  missing = tmp_path / 'no_teacher_here'
  r = run_main('--config=configs/itvm_checkerboard.py:smoke', f'--workdir={tmp_path / "run"}',
               f'--config.teacher.workdir={missing}', '--config.teacher.require_existing=True')
  assert r.returncode == 2
  assert str(missing / 'checkpoints') in r.stderr
  assert 'Traceback' not in r.stderr


def test_tensorboard_has_loss_scalars_and_sample_images(teacher_dir, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  config = smoke('itvm', **{'teacher.workdir': teacher_dir, 'train.plot_every': 2})
  train.train_and_evaluate(config, str(tmp_path))
  (events,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  acc = event_accumulator.EventAccumulator(events, size_guidance={'tensors': 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'loss', 'loss/diag', 'loss/offdiag', 'loss/init', 'loss/term', 'grad_norm'} <= tags
  assert {'train/samples', 'eval/samples'} <= tags
  losses = [e.step for e in acc.Tensors('loss')]
  assert losses == [2, 4]


def test_teacher_scores_are_reused_at_a_subset_of_its_step_counts(teacher_dir, tmp_path):
  """A student evaluated at fewer step counts than its teacher reads the teacher's own scores."""
  config = smoke('lmd', **{'teacher.workdir': teacher_dir, 'eval.steps': (1,)})
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['teacher_source'] == os.path.join(teacher_dir, 'eval.json')
  teacher = json.loads(open(results['teacher_source']).read())
  assert results['teacher_euler'] == {'1': teacher['teacher_euler']['1']}
  assert results['teacher_ode'] == teacher['teacher_ode']
