"""The README's and docs/ pages' examples run, their commands parse and validate, their links resolve,
the README fits on a screen or two, and the repository stands alone: every
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
# The README and the user guides under docs/: their examples run and their commands validate.
PAGES = ['README.md'] + sorted(os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, 'docs', '*.md')))
TEXTS = {p: open(os.path.join(REPO, p), encoding='utf-8').read() for p in PAGES}
ALL_PAGES = '\n'.join(TEXTS.values())
BLOCKS = re.findall(r'```(\w*)\n(.*?)```', ALL_PAGES, re.S)
DEFAULT_WORKDIR = 'runs/itvm_checkerboard'


def test_python_examples_run(capsys, student_dir, tmp_path):
  """Every Python block of the pages runs, in a folder where the default run's workdir
  (runs/itvm_checkerboard) is that run at smoke size (the session's student_dir)."""
  examples = [(page, code) for page, text in TEXTS.items()
              for lang, code in re.findall(r'```(\w*)\n(.*?)```', text, re.S) if lang == 'python']
  assert any(page == 'README.md' for page, _ in examples)
  (tmp_path / 'runs').mkdir()
  os.symlink(student_dir, tmp_path / DEFAULT_WORKDIR)
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    for page, code in examples:
      namespace = {}
      exec(compile(code, page, 'exec'), namespace)  # pylint: disable=exec-used
      if "flowmap_jax.load('runs/itvm_checkerboard')" in code and 'samples' in namespace:
        assert namespace['samples'].shape == (10_000, 2), page
  finally:
    os.chdir(cwd)
  assert "['loss/diag', 'loss/init', 'loss/offdiag', 'loss/term'" in capsys.readouterr().out


def test_readme_fits_on_a_screen_or_two():
  assert len(TEXTS['README.md'].splitlines()) <= 200


def test_relative_links_resolve():
  """Every [text](path) of the pages points at a file of the repository."""
  for page, text in TEXTS.items():
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
      if re.match(r'\w+://|#|mailto:', target):
        continue
      path = os.path.normpath(os.path.join(REPO, os.path.dirname(page), target.split('#')[0]))
      assert os.path.exists(path), (page, target)


def _commands():
  """Every command of the pages that names a config: in code blocks (continuations joined) and in
  backticks in the text and tables."""
  lines = []
  for _, code in BLOCKS:
    lines += code.replace('\\\n', ' ').splitlines()
  lines += re.findall(r'`([^`\n]*--config[ =]configs/[^`\n]*)`', ALL_PAGES)
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
  monkeypatch.chdir(tmp_path)   # where the user's own files are, here empty stand-ins
  for command in commands:
    config = _parse(command)
    # The files and folders a command names (data, tfds directory, FID weights, classifier) are the
    # user's: stand-ins of the same name here, so that validation checks everything else.
    for block, field, is_dir in [('data', 'path', False), ('data', 'data_dir', True),
                                 ('data', 'vae', False), ('eval', 'fid_weights', False),
                                 ('eval', 'classifier', False)]:
      if config[block].get(field):
        if config.data.name in ('folder', 'latents') and field == 'path':
          is_dir = True
        stand_in = tmp_path / 'user' / os.path.basename(config[block][field])
        stand_in.parent.mkdir(exist_ok=True)
        if is_dir:
          stand_in.mkdir(exist_ok=True)
        else:
          stand_in.touch()
        config[block][field] = str(stand_in)
    assert validate.problems_of(config, num_devices=1, num_processes=1) == [], command


def test_every_override_the_pages_mention_exists():
  configs = [config_io.load(p) for p in sorted(glob.glob(os.path.join(REPO, 'configs', '[a-z]*_*.py')))]
  fields = set()
  for c in configs:
    fields |= set(config_io.flatten(config_io.to_dict(c)))
  for field in set(re.findall(r'--config\.([\w.]+)=', ALL_PAGES)):
    assert field in fields, f'a page names --config.{field}, which no config has'


def test_every_config_has_the_fields_added_since_runs_were_saved():
  """config_io.ADDED_FIELDS fills a saved config.json where the field's block exists: a config with
  that block but without the field would differ from its own saved run and refuse to resume."""
  for path in sorted(glob.glob(os.path.join(REPO, 'configs', '[a-z]*_*.py'))):
    flat = config_io.flatten(config_io.to_dict(config_io.load(path)))
    for key in config_io.ADDED_FIELDS:
      block = key.rsplit('.', 1)[0]
      if any(k.startswith(block + '.') for k in flat):
        assert key in flat, (os.path.basename(path), key)


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
