"""A teacher is what its workdir says it is: the config saved beside its checkpoint, or, when it has
to be trained first, teacher.config on the student's data; a teacher of other data is exit code 2."""
import json

import pytest

from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax import train
from flowmap_jax import validate
from test_pipeline import run_main, smoke

SPIRALS = '--config.data.name=spirals'


@pytest.fixture(scope='module')
def spirals_run(tmp_path_factory):
  """An LMD student on the spirals whose teacher is missing: trained first, on the spirals."""
  workdir = tmp_path_factory.mktemp('lmd_spirals')
  r = run_main('--config=configs/lmd_checkerboard.py:smoke', f'--workdir={workdir}', SPIRALS)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def test_missing_teacher_is_trained_on_the_students_data(spirals_run):
  teacher = json.loads((spirals_run / 'teacher' / 'config.json').read_text())
  assert teacher['data']['name'] == 'spirals' and teacher['loss']['name'] == 'fm'
  assert json.loads((spirals_run / 'teacher' / 'eval.json').read_text())['estimator']['data'] == \
      'spirals'
  student = json.loads((spirals_run / 'eval.json').read_text())
  assert student['teacher_source'] == str(spirals_run / 'teacher' / 'eval.json')


def test_a_students_scores_of_its_teacher_are_kept_for_the_next_student(spirals_run):
  """Scores at settings the teacher's eval.json lacks go to its teacher_scores.json; a lookup reuses
  them only for the same estimator and the same teacher checkpoint."""
  from flowmap_jax import evaluate  # pylint: disable=g-import-not-at-top
  tdir = str(spirals_run / 'teacher')
  config = smoke('lmd', **{'data.name': 'spirals'})
  step = json.loads((spirals_run / 'teacher' / 'eval.json').read_text())['step']
  own = evaluate.cached_teacher(tdir, config, step=step)
  assert own['teacher_source'] == str(spirals_run / 'teacher' / 'eval.json')
  assert evaluate.cached_teacher(tdir, config, step=step + 1) is None   # another checkpoint
  other = smoke('lmd', **{'data.name': 'spirals', 'eval.steps': (3,)})
  assert evaluate.cached_teacher(tdir, other, step=step) is None
  scores = {'teacher_euler': {'3': {'kl': 0.5, 'energy': 0.1}},
            'teacher_ode': {'kl': 0.25, 'energy': 0.05, 'nfe': 30.0}}
  evaluate.keep_teacher_scores(tdir, step, other, scores)
  kept = evaluate.cached_teacher(tdir, other, step=step)
  assert kept == dict(scores, teacher_source=str(spirals_run / 'teacher' / evaluate.KEPT_SCORES))
  assert evaluate.cached_teacher(tdir, other, step=step + 1) is None
  assert evaluate.cached_teacher(tdir, config, step=step) == own   # the teacher's own still first


def test_existing_teacher_of_the_same_data_is_distilled(spirals_run, tmp_path):
  r = run_main('--config=configs/itvm_checkerboard.py:smoke', f'--workdir={tmp_path}', SPIRALS,
               f'--config.teacher.workdir={spirals_run / "teacher"}',
               '--config.teacher.require_existing=True')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((tmp_path / 'eval.json').read_text())['estimator']['data'] == 'spirals'


def test_teacher_of_other_data_exits_2_naming_both(spirals_run, tmp_path):
  r = run_main('--config=configs/lmd_checkerboard.py:smoke', f'--workdir={tmp_path}',
               f'--config.teacher.workdir={spirals_run / "teacher"}')
  assert r.returncode == 2, r.stderr[-3000:]
  assert "The student's data (name='checkerboard') and its teacher's (name='spirals', from " \
      f"{spirals_run / 'teacher' / 'config.json'})" in r.stderr
  assert 'Traceback' not in r.stderr


def test_teacher_network_comes_from_its_saved_config(tmp_path):
  """A teacher wider than teacher.config says is opened as it was trained (config.json)."""
  tdir = tmp_path / 'wide_teacher'
  train.train_and_evaluate(smoke('fm', **{'model.mlp.width': 48}), str(tdir))
  config = smoke('lmd', **{'teacher.workdir': str(tdir), 'train.init_from_teacher': False})
  teacher = teacher_lib.load(config, str(tmp_path / 'student'))
  assert teacher.source == str(tdir / 'config.json')
  assert teacher.exp.config.model.mlp.width == 48
  assert teacher.params['Dense_0']['kernel'].shape[-1] == 48
  # Starting from a teacher of other shapes names both.
  config.train.init_from_teacher = True
  with pytest.raises(validate.ConfigError, match=r'the teacher \(.*config.json\) has parameter '
                     r'shapes .* and this model \(mlp: activation gelu, depth 2, width 32\)'):
    train.train_and_evaluate(config, str(tmp_path / 'student'))
  # A checkpoint without config.json is opened with teacher.config, and a mismatch names it.
  (tdir / 'config.json').unlink()
  with pytest.raises(validate.ConfigError, match='does not match the teacher config '
                     'configs/fm_checkerboard.py:smoke'):
    teacher_lib.load(config, str(tmp_path / 'student2'))


def test_teacher_trained_first_takes_the_students_data_block(tmp_path):
  config = smoke('itvm', **{'data.name': 'two_moons', 'data.batch_size': 32, 'seed': 3})
  tconfig, tworkdir, source = teacher_lib.config_of(config, str(tmp_path))
  assert tworkdir == str(tmp_path / 'teacher') and "student's data block and seed" in source
  assert dict(tconfig.data) == dict(config.data) and tconfig.seed == 3
  assert state_lib.Experiment(tconfig).sigma0 == state_lib.Experiment(config).sigma0
