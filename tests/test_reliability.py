"""A run never loses work, and bad input never gets far: kill/resume, corrupt checkpoints,
non-finite steps, config validation, workdir and teacher safety."""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowmap_jax import checkpoint
from flowmap_jax import state as state_lib
from flowmap_jax import train
from flowmap_jax import validate
import entry_point
import faults
from test_pipeline import REPO, run_main, smoke
import xla_flags

ENV = dict(os.environ, XLA_FLAGS=xla_flags.FAST, TF_CPP_MIN_LOG_LEVEL='3')


def _state(workdir, config):
  exp = state_lib.Experiment(config)
  mngr = checkpoint.manager(workdir)
  state = checkpoint.restore_latest(mngr, exp.abstract_state())
  mngr.close()
  return jax.device_get(state)


def _assert_same(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves((a.params, a.target_ema, a.eval_emas, a.opt_state)),
                  jax.tree.leaves((b.params, b.target_ema, b.eval_emas, b.opt_state))):
    np.testing.assert_array_equal(x, y)


def _latest_step(workdir):
  """The newest committed checkpoint step (-1: none). Not a count of folders: Orbax keeps only
  the last few, and a save in progress has a temporary folder that also starts with its step."""
  steps = [int(p.name) for p in (workdir / 'checkpoints').glob('*') if p.name.isdigit()]
  return max(steps, default=-1)


def test_three_kill9_cycles_end_bit_identical(teacher_dir, tmp_path):
  steps = 3000
  args = ['--config=configs/itvm_checkerboard.py:smoke', f'--config.teacher.workdir={teacher_dir}',
          f'--config.train.num_steps={steps}', '--config.train.checkpoint_every=250',
          '--config.train.log_every=50', '--config.eval.steps=(1,)']
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  r = run_main(*args, f'--workdir={straight}')
  assert r.returncode == 0, r.stderr[-2000:]
  rnd = random.Random(0)
  for cycle in range(3):
    before = _latest_step(killed)
    proc = entry_point.start_main(*args, f'--workdir={killed}')
    deadline = time.time() + 300
    # Wait for this process to write a checkpoint of its own, then kill it at a random moment.
    while _latest_step(killed) <= before and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
    time.sleep(rnd.uniform(0.0, 0.3))
    assert proc.poll() is None, f'cycle {cycle}: the run finished before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not (killed / 'eval.json').exists()
  r = run_main(*args, f'--workdir={killed}')
  assert r.returncode == 0, r.stderr[-2000:]
  config = smoke('itvm', **{'teacher.workdir': teacher_dir, 'train.num_steps': steps})
  _assert_same(_state(str(killed), config), _state(str(straight), config))


def _truncate(step_dir):
  for f in glob.glob(os.path.join(step_dir, 'state', '**', '*'), recursive=True):
    if os.path.isfile(f):
      open(f, 'wb').close()


def _scramble(step_dir):
  for f in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True):
    if os.path.isfile(f):
      with open(f, 'r+b') as fh:
        fh.write(os.urandom(max(os.path.getsize(f), 16)))


@pytest.mark.parametrize('corrupt', [_truncate, _scramble])
def test_unreadable_latest_checkpoint_falls_back_to_previous(tmp_path, caplog, corrupt):
  # 4 steps, checkpoints at 2 and 4; a constant schedule, so extending the run changes no step.
  config = smoke('lsd', **{'optim.schedule': 'constant'})
  run = tmp_path / 'run'
  train.train_and_evaluate(config, str(run))
  corrupt(str(run / 'checkpoints' / '4'))
  longer = smoke('lsd', **{'train.num_steps': 6, 'optim.schedule': 'constant'})
  with caplog.at_level('WARNING'):
    train.train_and_evaluate(longer, str(run))
  assert 'Checkpoint at step 4' in caplog.text and 'unreadable' in caplog.text
  assert glob.glob(str(run / 'checkpoints_unreadable' / '4_*'))
  straight = tmp_path / 'straight'
  train.train_and_evaluate(longer, str(straight))
  _assert_same(_state(str(run), longer), _state(str(straight), longer))


def test_non_finite_step_stops_with_step_terms_and_last_checkpoint(tmp_path):
  r = subprocess.run([sys.executable, os.path.join(REPO, 'tests', 'faults.py'), '3',
                      '--config=configs/lsd_checkerboard.py:smoke', f'--workdir={tmp_path}',
                      '--config.train.num_steps=8'], cwd=REPO, env=ENV, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 3, r.stderr[-2000:]
  assert 'Non-finite loss or gradient at step 3' in r.stderr
  assert 'loss=nan' in r.stderr and 'loss/diag=' in r.stderr and 'loss/offdiag=' in r.stderr
  assert 'last good checkpoint is step 2' in r.stderr
  assert 'Traceback' not in r.stderr
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']


def test_max_bad_steps_skips_and_counts(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  config = smoke('lsd', **{'train.num_steps': 8, 'train.max_bad_steps': 2})
  with faults.poisoned('lsd', (3, 5)):
    train.train_and_evaluate(config, str(tmp_path))
  state = _state(str(tmp_path), config)
  assert int(state.step) == 8 and int(state.bad_steps) == 2 and int(state.last_bad_step) == 5
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(state.params))
  (events,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  acc = event_accumulator.EventAccumulator(events, size_guidance={'tensors': 0})
  acc.Reload()
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  logged = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors('bad_steps')}
  assert logged[2] == 0 and logged[4] == 1 and logged[8] == 2


# ----------------------------------------------------------------------------- config rules

BAD = [  # (override, what the message must say)
    ('--config.loss.name=lsdd', "loss.name='lsdd' is not known"),
    ('--config.model.name=resnet', "model.name='resnet' is not known"),
    ('--config.data.name=mnits', "data.name='mnits' is not known"),
    ('--config.data.name=mnist', "data.name='mnist' is an image set, but this config's data block"),
    ('--config.optim.name=sgd', "optim.name='sgd' is not known"),
    ('--config.optim.schedule=step', "optim.schedule='step' is not known"),
    ('--config.loss.time_max=1.5', 'loss.time_max=1.5 must be in [0.0, 1.0]'),
    ('--config.loss.time_min=-0.1', 'loss.time_min=-0.1 must be in [0.0, 1.0]'),
    ('--config.loss.time_min=0.5 --config.loss.time_max=0.5', 'the time range is empty'),
    ('--config.loss.diag_fraction=1.2', 'loss.diag_fraction=1.2 must be in [0.0, 1.0]'),
    ('--config.loss.itvm.tau=0.0', 'loss.itvm.tau=0.0 must be in (0.0, 1.0]'),
    ('--config.loss.itvm.tau=1.5', 'loss.itvm.tau=1.5 must be in (0.0, 1.0]'),
    ('--config.data.batch_size=63 --config.mesh.data=3', 'does not fit the 1 devices'),
    ('--config.loss.itvm.ema_rate=1.0', 'loss.itvm.ema_rate=1.0 must be in [0.0, 1.0)'),
    ('--config.train.eval_ema_rates=(0.9,1.0)', 'train.eval_ema_rates=1.0 must be in [0.0, 1.0)'),
    ("--config.teacher.config=configs/nope.py", "teacher.config='configs/nope.py' is not a config"),
    ('--config.loss.diag_fraction=abc', 'diag_fraction'),
    ('--config.loss.nope=1', '--config.loss.nope=1: configs/itvm_checkerboard.py:smoke has no '
     'field loss.nope.'),
    ('--config.model.remat=full', "model.remat='full' applies to the image networks"),
    # Fields with fixed values are checked where the chosen network ignores them (the MLP has no
    # dtype; the DiT block is there though model.name is mlp).
    ('--config.model.dtype=float8', "model.dtype='float8' is not known"),
    ('--config.model.mlp.activation=swish', "model.mlp.activation='swish' is not known"),
    ('--config.loss.psd.gamma=middle', "loss.psd.gamma='middle' is not known"),
    # Path fields.
    ('--config.eval.classifier=x.pickle', 'configs/itvm_checkerboard.py:smoke has no field '
     'eval.classifier'),   # a 2-D config has no image evaluation block
    ('--config.teacher.workdir=setup.py', "teacher.workdir='setup.py' is a file, not a workdir"),
]


def _main_with(override, workdir):
  return run_main('--config=configs/itvm_checkerboard.py:smoke', f'--workdir={workdir}',
                  *override.split(), timeout=300)


def test_every_validation_rule_exits_2_with_its_message(tmp_path):
  results = [_main_with(override, tmp_path / str(i)) for i, (override, _) in enumerate(BAD)]
  for (override, message), r in zip(BAD, results):
    assert r.returncode == 2, (override, r.returncode, r.stderr[-1500:])
    assert message in r.stderr, (override, r.stderr[-1500:])
    assert 'Traceback' not in r.stderr, (override, r.stderr[-1500:])


def test_bad_command_lines_exit_2_in_one_line(tmp_path):
  """A --config file that does not exist or raises, a --workdir that is a file: exit 2, one line
  naming the problem, no traceback."""
  raising = tmp_path / 'raising.py'
  raising.write_text('def get_config():\n  raise RuntimeError("no such experiment")\n')
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  cases = [
      (['--config=configs/nope.py', f'--workdir={tmp_path / "w"}'],
       f'--config configs/nope.py: there is no config file {REPO}/configs/nope.py'),
      ([f'--config={raising}', f'--workdir={tmp_path / "w"}'],
       f'--config {raising} does not load: RuntimeError: no such experiment'),
      (['--config=configs/lsd_checkerboard.py:huge', f'--workdir={tmp_path / "w"}'],
       "Unknown config argument 'huge'; known: smoke."),
      (['--config=configs/lsd_checkerboard.py:smoke', f'--workdir={a_file}'],
       f'--workdir {a_file} is a file; a workdir is a folder'),
  ]
  results = [run_main(*args, timeout=300) for args, _ in cases]
  for (args, message), r in zip(cases, results):
    assert r.returncode == 2, (args, r.returncode, r.stderr[-1500:])
    lines = [l for l in r.stderr.splitlines() if l.startswith('  - ')]
    assert len(lines) == 1 and message in lines[0], (args, r.stderr[-1500:])
    assert 'Traceback' not in r.stderr, (args, r.stderr[-1500:])


def test_batch_must_divide_the_mesh():
  config = smoke('lsd')
  config.data.batch_size = 60
  problems = validate.problems_of(config, num_devices=8, num_processes=1)
  assert any('data.batch_size=60 is not divisible by the 8 devices' in p for p in problems)


def test_all_problems_are_reported_at_once():
  config = smoke('itvm')
  config.loss.diag_fraction, config.loss.itvm.tau, config.optim.name = -1, 2, 'sgd'
  assert len(validate.problems_of(config)) == 3


def test_an_evaluation_ema_still_holding_its_start_is_warned_about():
  """The EMAs start at the starting weights: 0.999 over 1500 steps keeps 22 % of a random init
  (on MNIST its ODE samples were 69 % recognisable, against 92 % for the 0.99 EMA)."""
  config = smoke('fm', **{'train.num_steps': 1500, 'train.eval_ema_rates': (0.99, 0.999)})
  (warning,) = validate.warnings_of(config)
  assert '(0.999)' in warning and '22.3% of its starting weights' in warning, warning
  assert 'the random initialisation' in warning and 'e.g. 0.996,' in warning
  config = smoke('fm', **{'train.num_steps': 1500, 'train.eval_ema_rates': (0.99, 0.996)})
  assert validate.warnings_of(config) == []  # 0.996^1500 = 0.25 %


def test_a_run_saved_before_a_field_was_added_resumes(tmp_path):
  """config.json of a run older than config_io.ADDED_FIELDS reads as if it had the values those runs
  used (short_target 'terminal', since made 'heun' by default): it resumes with them, and a config
  that asks for the new default is told the difference."""
  old = {'eval.steps': (1,), 'loss.itvm.short_target': 'terminal'}
  train.train_and_evaluate(smoke('itvm', **{'train.num_steps': 2, **old}), str(tmp_path))
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['loss']['itvm']['short_target'], saved['loss']['weighting']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  results = train.train_and_evaluate(smoke('itvm', **{'train.num_steps': 4, **old}), str(tmp_path))
  assert results['step'] == 4
  with pytest.raises(validate.ConfigError, match="loss.itvm.short_target: 'terminal' -> 'heun'"):
    train.train_and_evaluate(smoke('itvm', **{'train.num_steps': 6, 'eval.steps': (1,)}),
                             str(tmp_path))


def test_workdir_of_another_config_is_not_resumed(tmp_path):

  train.train_and_evaluate(smoke('lsd'), str(tmp_path))
  with pytest.raises(validate.ConfigError, match=r"optim.lr: 0.001 -> 0.002"):
    train.train_and_evaluate(smoke('lsd', **{'optim.lr': 2e-3}), str(tmp_path))
  # Extending a run is normal; so are logging and evaluation changes.
  train.train_and_evaluate(smoke('lsd', **{'train.num_steps': 6, 'train.log_every': 3,
                                           'eval.steps': (1,)}), str(tmp_path))
  # Another loss's option block is not read by this run: a changed default there must not block it.
  train.train_and_evaluate(smoke('lsd', **{'train.num_steps': 7, 'eval.steps': (1,),
                                           'loss.itvm.tau': 0.2, 'loss.psd.gamma': 'uniform'}),
                           str(tmp_path))
  # Nor does where a teacher would be found, in a run that loads none (a self-distillation run
  # linked into another study tree); a distillation run does read it.
  train.train_and_evaluate(smoke('lsd', **{'train.num_steps': 7, 'eval.steps': (1,),
                                           'teacher.workdir': str(tmp_path / 'elsewhere')}),
                           str(tmp_path))
  assert validate.config_differences(smoke('lsd', **{'teacher.config': 'configs/x.py'}),
                                     str(tmp_path)) == []
  assert not validate.loads_teacher(smoke('lsd'))
  assert validate.loads_teacher(smoke('lsd', **{'train.init_from_teacher': True}))
  distil = smoke('lmd', **{'teacher.workdir': str(tmp_path / 'its_teacher')})
  assert validate.loads_teacher(distil)
  assert any(d.startswith('teacher.workdir:')
             for d in validate.config_differences(distil, str(tmp_path)))
  train.train_and_evaluate(smoke('lsd', **{'optim.lr': 2e-3, 'train.num_steps': 8,
                                           'train.allow_config_change': True}), str(tmp_path))
  assert json.loads((tmp_path / 'eval.json').read_text())['step'] == 8


# ----------------------------------------------------------------------------- properties

VALID = st.fixed_dictionaries({
    'loss.name': st.sampled_from(['fm', 'lsd', 'esd', 'psd', 'meanflow']),
    'loss.interpolant': st.sampled_from(['linear', 'trig']),
    'loss.diag_fraction': st.floats(0.0, 1.0),
    'loss.time_sampler': st.sampled_from(['uniform', 'logit_normal']),
    'loss.psd.gamma': st.sampled_from(['midpoint', 'uniform']),
    'optim.name': st.sampled_from(['adam', 'adamw', 'radam']),
    'optim.schedule': st.sampled_from(['constant', 'cosine', 'sqrt']),
    'data.name': st.sampled_from(['checkerboard', 'eight_gaussians', 'two_moons', 'spirals']),
})


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(overrides=VALID)
def test_random_valid_configs_train(tmp_path_factory, overrides):
  config = smoke('lsd', **overrides, **{'train.num_steps': 2, 'eval.steps': (1,)})
  assert validate.problems_of(config) == []
  results = train.train_and_evaluate(config, str(tmp_path_factory.mktemp('valid')))
  assert results['step'] == 2


INVALID = st.one_of(
    st.tuples(st.just('loss.diag_fraction'), st.floats(1.0001, 10) | st.floats(-10, -0.0001)),
    st.tuples(st.just('loss.itvm.tau'), st.floats(-1, 0.0) | st.floats(1.0001, 5)),
    st.tuples(st.just('loss.itvm.ema_rate'), st.floats(1.0, 2.0) | st.floats(-1, -1e-6)),
    st.tuples(st.just('loss.time_max'), st.floats(1.0001, 3)),
    st.tuples(st.just('loss.name'), st.text('abcxyz', min_size=1, max_size=6)),
    st.tuples(st.just('data.batch_size'), st.integers(-5, 0)),
)


@settings(max_examples=60, deadline=None)
@given(bad=INVALID)
def test_random_invalid_configs_are_rejected(bad):
  field, value = bad
  config = smoke('itvm', **{field: value})
  if field == 'loss.name' and value in ('fm', 'lsd', 'esd', 'psd', 'emd', 'lmd'):
    return
  problems = validate.problems_of(config)
  assert problems and any(field in p for p in problems), problems


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=INVALID)
def test_random_invalid_overrides_exit_2(tmp_path_factory, bad):
  field, value = bad
  if field == 'loss.name' and value in ('fm', 'lsd', 'esd', 'psd', 'emd', 'lmd'):
    return
  r = _main_with(f'--config.{field}={value}', tmp_path_factory.mktemp('invalid'))
  assert r.returncode == 2 and field in r.stderr and 'Traceback' not in r.stderr, r.stderr[-1500:]
