"""Progress of long loops (flowmap_jax/progress.py): a bar on a terminal, log lines with the rate and
ETA otherwise, nothing from processes other than 0, and evaluation's sampling loops report."""
import io
import json
import logging
import shutil

import jax

from flowmap_jax import config_io
from flowmap_jax import modes
from flowmap_jax import progress


def _messages(caplog):
  return [r.getMessage() for r in caplog.records if r.name == 'absl']


def test_log_lines_count_rate_and_eta_when_not_a_terminal(caplog, monkeypatch):
  monkeypatch.setattr('sys.stderr', io.StringIO())   # not a terminal
  with caplog.at_level(logging.INFO, logger='absl'):
    assert list(progress.track(range(4), desc='work', every_s=0)) == [0, 1, 2, 3]
  lines = _messages(caplog)
  assert lines[0].startswith('work: 1/4 batches') and 'ETA' in lines[0] and 'batches/s' in lines[0]
  assert lines[3].startswith('work: 4/4') and lines[-1].startswith('work: 4 batches done in')
  caplog.clear()
  with caplog.at_level(logging.INFO, logger='absl'):   # a fast loop says nothing
    assert list(progress.track(iter(range(3)), desc='fast')) == [0, 1, 2]
  assert not _messages(caplog)


def test_a_terminal_gets_a_bar_and_other_processes_nothing(caplog, monkeypatch):
  class Terminal(io.StringIO):
    def isatty(self):
      return True
  terminal = Terminal()
  monkeypatch.setattr('sys.stderr', terminal)
  assert list(progress.track(range(5), desc='bar')) == list(range(5))
  assert 'bar:' in terminal.getvalue() and '0/5 [' in terminal.getvalue()   # tqdm's bar
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  terminal.seek(0)
  terminal.truncate()
  with caplog.at_level(logging.INFO, logger='absl'):
    assert list(progress.track(range(5), desc='quiet', every_s=0)) == list(range(5))
  assert terminal.getvalue() == '' and not _messages(caplog)


def test_evaluation_reports_each_sampler(teacher_dir, tmp_path, caplog, monkeypatch):
  """--mode eval of a teacher: its Euler at each step count and its adaptive ODE report."""
  workdir = tmp_path / 'teacher'
  shutil.copytree(teacher_dir, workdir)
  monkeypatch.setattr(progress, 'LOG_EVERY_S', 0.0)
  monkeypatch.setattr('sys.stderr', io.StringIO())
  config = config_io.from_json((workdir / 'config.json').read_text())
  with caplog.at_level(logging.INFO, logger='absl'):
    modes.evaluate_workdir(config, str(workdir))
  lines = _messages(caplog)
  n = config.eval.num_samples
  for what in ('Euler, 1 steps', 'Euler, 2 steps', 'adaptive ODE'):
    assert any(l.startswith(f'{what}: {n} samples: 1/1 batches') for l in lines), (what, lines)
  # Reporting changes nothing evaluated.
  assert json.loads((workdir / 'eval.json').read_text()) == json.loads(
      open(f'{teacher_dir}/eval.json').read())
