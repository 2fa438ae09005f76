"""The README's examples run, its commands parse and validate, and the repository stands alone: every
docs/ page a docstring or page cites exists, and nothing points outside the repository."""
import ast
import glob
import os
import re
import shlex

import pytest

from flowmap_jax import config_io
from flowmap_jax import validate

REPO = config_io.REPO_ROOT
README = open(os.path.join(REPO, 'README.md')).read()
BLOCKS = re.findall(r'```(\w*)\n(.*?)```', README, re.S)


def test_python_examples_run(capsys):
  examples = [code for lang, code in BLOCKS if lang == 'python']
  assert examples
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    for code in examples:
      exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  finally:
    os.chdir(cwd)
  assert "['loss/diag', 'loss/init', 'loss/offdiag', 'loss/term'" in capsys.readouterr().out


def _commands():
  """Every command of the README that names a config: in code blocks (continuations joined) and in
  backticks in the text and tables."""
  lines = []
  for _, code in BLOCKS:
    lines += code.replace('\\\n', ' ').splitlines()
  lines += re.findall(r'`([^`\n]*--config[ =]configs/[^`\n]*)`', README)
  return [l.split('#')[0] for l in lines if re.search(r'--config[ =]configs/', l)]


def _parse(command):
  """The config of a command line: its --config file with its --config.a.b=v overrides applied as
  config_flags does (the field must exist; the value takes the field's type)."""
  args = shlex.split(command)
  spec = next(a.split('=', 1)[1] if '=' in a else args[i + 1]
              for i, a in enumerate(args) if a in ('--config',) or a.startswith('--config='))
  config = config_io.load(spec)
  for arg in args:
    m = re.fullmatch(r'--config\.([\w.]+)=(.*)', arg)
    if m:
      *path, field = m.group(1).split('.')
      node = config
      for p in path:
        node = node[p]
      old = node[field]
      value = m.group(2)
      if isinstance(old, bool):
        value = {'True': True, 'False': False}[value]
      elif isinstance(old, (int, float, str)):
        value = type(old)(value)
      else:
        value = ast.literal_eval(value)
      node[field] = value
  return config


def test_readme_commands_parse_and_validate(tmp_path, monkeypatch):
  commands = _commands()
  assert len(commands) >= 15, commands
  monkeypatch.chdir(tmp_path)   # where the user's own files (data.path) are, here empty stand-ins
  for command in commands:
    config = _parse(command)
    if config.data.get('path'):
      (tmp_path / config.data.path).touch()
    assert validate.problems_of(config, num_devices=1, num_processes=1) == [], command


def test_every_override_the_readme_mentions_exists():
  configs = [config_io.load(p) for p in sorted(glob.glob(os.path.join(REPO, 'configs', '[a-z]*_*.py')))]
  fields = set()
  for c in configs:
    fields |= set(config_io.flatten(config_io.to_dict(c)))
  for field in set(re.findall(r'--config\.([\w.]+)=', README)):
    assert field in fields, f'README names --config.{field}, which no config has'


def _cited_docs(text):
  return set(re.findall(r'docs/(\w+\.md)', text)) | set(re.findall(r'\]\((\w+\.md)\)', text))


@pytest.mark.parametrize('root', ['README.md', 'docs', 'flowmap_jax', 'configs', 'benchmarks',
                                  'tests'])
def test_cited_docs_exist_and_nothing_points_outside(root):
  paths = ([os.path.join(REPO, root)] if root.endswith('.md') else
           glob.glob(os.path.join(REPO, root, '**', '*.*'), recursive=True))
  for path in paths:
    if not path.endswith(('.py', '.md')) or path.endswith('test_readme.py'):
      continue
    text = open(path, encoding='utf-8').read()
    for page in _cited_docs(text):
      assert os.path.exists(os.path.join(REPO, 'docs', page)), (path, page)
    if not path.endswith(('test_images.py', 'test_local_data.py', 'conftest.py')):
      # tests read ../shared/data only
      assert '../shared' not in text and 'ALGORITHMS.md' not in text, path
