"""The 2-D study script: one teacher per (data set, seed) through the user's teacher handling, runs
in their own workdirs, mean ± std over seeds, and a second invocation that trains nothing."""
import json
import os
import sys

from flowmap_jax import config_io

sys.path.insert(0, os.path.join(config_io.REPO_ROOT, 'benchmarks'))
import compare_2d  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

ARGS = ['--smoke', '--datasets', 'two_moons', '--seeds', '0,1', '--variants', 'itvm u=s_plus_tau',
        '--steps', '4', '--num_samples', '10000', '--eval_steps', '1,2']


def _study(monkeypatch, capsys, workdir):
  monkeypatch.chdir(config_io.REPO_ROOT)
  monkeypatch.setattr(sys, 'argv', ['compare_2d.py', '--workdir', str(workdir), *ARGS])
  compare_2d.main()
  return capsys.readouterr().out


def test_study_runs_resumes_and_reports_mean_and_std(monkeypatch, capsys, tmp_path):
  out = _study(monkeypatch, capsys, tmp_path)
  for seed in (0, 1):
    root = tmp_path / 'two_moons' / f'seed{seed}'
    teacher = json.loads((root / 'teacher' / 'config.json').read_text())
    assert teacher['seed'] == seed and teacher['data']['name'] == 'two_moons'
    student = json.loads((root / 'itvm_u-s_plus_tau' / 'config.json').read_text())
    assert student['loss']['itvm']['u'] == 's_plus_tau' and student['seed'] == seed
  row = next(l for l in out.splitlines() if l.startswith('| itvm u=s_plus_tau |'))
  assert row.count('±') == 2
  assert '| teacher Euler (same NFE) |' in out and '| estimator floor |' in out
  assert out.count('two_moons seed') == 2  # one line per trained student
  again = _study(monkeypatch, capsys, tmp_path)
  assert 'two_moons seed' not in again  # finished runs are skipped
  assert row in again
  # --report trains nothing and says how many seeds a cell has.
  monkeypatch.setattr(sys, 'argv', ['compare_2d.py', '--workdir', str(tmp_path), *ARGS[:4],
                                    '0,1,2', *ARGS[5:], '--report'])
  compare_2d.main()
  report = capsys.readouterr().out
  assert 'two_moons seed' not in report and '(2 of 3)' in report
  assert not (tmp_path / 'two_moons' / 'seed2').exists()
  # A run saved under the variant's name whose config is not what the name now means (a default
  # changed since it ran) is left out of the table, with the difference said.
  path = tmp_path / 'two_moons' / 'seed0' / 'itvm_u-s_plus_tau' / 'config.json'
  saved = json.loads(path.read_text())
  saved['loss']['itvm']['tau'] = 0.3
  path.write_text(json.dumps(saved))
  compare_2d.main()
  report = capsys.readouterr().out
  assert "loss.itvm.tau: 0.3 -> " in report and '(1 of 3)' in report


def test_variants_name_options_of_their_loss_or_any_field():
  assert compare_2d.parse_variant('itvm u=uniform tau=0.1') == (
      'itvm', {'loss.itvm.u': 'uniform', 'loss.itvm.tau': '0.1'})
  assert compare_2d.parse_variant('lmd loss.diag_fraction=0.25') == (
      'lmd', {'loss.diag_fraction': '0.25'})


def test_itvm_tau_scores_the_teacher_euler_as_the_runs_own_evaluation(monkeypatch, capsys,
                                                                       tmp_path):
  """τ = 0.5 puts the teacher's Euler at 2 steps, which the teacher's own eval.json also holds: the
  script must reproduce it exactly (same data draw, noise and estimator)."""
  import itvm_tau  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(config_io.REPO_ROOT)
  monkeypatch.setattr(sys, 'argv', ['itvm_tau.py', '--workdir', str(tmp_path), '--smoke',
                                    '--datasets', 'two_moons', '--seeds', '0', '--taus', '0.5',
                                    '--steps', '4', '--num_samples', '10000', '--eval_steps', '1,2'])
  itvm_tau.main()
  out = capsys.readouterr().out
  teacher = json.loads((tmp_path / 'two_moons' / 'seed0' / 'teacher' / 'eval.json').read_text())
  run_dir = tmp_path / 'two_moons' / 'seed0' / 'itvm_ema_rate-0.9_short_target-terminal_tau-0.5'
  run = json.loads((run_dir / 'eval.json').read_text())
  row = next(l for l in out.splitlines() if l.startswith('| two_moons (seed 0) | 0.5 |'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells[2] == f'{run["flow_map"]["1"]["kl"]:.3f}'
  assert cells[4] == f'{teacher["teacher_euler"]["2"]["kl"]:.3f} (2 steps)'


def test_regenerated_results_section_keeps_its_notes(tmp_path):
  path = str(tmp_path / 'RESULTS.md')
  compare_2d.write_results('Study', 'Command: `a`\n\n### one\n\n| old |', path)
  compare_2d.write_results('Other', 'untouched', path)
  text = open(path).read().replace(
      '### one', '<!-- notes -->\n**Verdict**: by hand.\n<!-- /notes -->\n\n### one')
  open(path, 'w').write(text)
  compare_2d.write_results('Study', 'Command: `b`\n\n### one\n\n| new |\n\n### two', path)
  text = open(path).read()
  assert text.count('**Verdict**: by hand.') == 1 and '| old |' not in text
  assert text.index('Command: `b`') < text.index('by hand') < text.index('| new |')
  assert text.index('### two') < text.index('## Other') and 'untouched' in text
