"""A plain `pip install .` without installing anything (tests/test_launch.py): with this folder on
PYTHONPATH and FLOWMAP_PLAIN_INSTALL naming a JSON list of top-level packages, an import of one of
them fails with ModuleNotFoundError, as it would where only setup.py's install_requires (and what
they require) are installed. The list is this machine's packages that none of those bring (the test
extra's, other projects'); the names tried are appended to FLOWMAP_PLAIN_INSTALL + '.tried'.
"""
import json
import os
import sys


class _PlainInstall:
  """A meta-path finder that answers 'not installed' for the blocked packages."""

  def __init__(self, blocked, log):
    self.blocked, self.log = frozenset(blocked), log

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name.partition('.')[0] not in self.blocked:
      return None
    with open(self.log, 'a') as f:
      f.write(name + '\n')
    raise ModuleNotFoundError(f"No module named {name!r} (no requirement of setup.py's "
                              'install_requires brings it)', name=name)


if os.environ.get('FLOWMAP_PLAIN_INSTALL'):
  with open(os.environ['FLOWMAP_PLAIN_INSTALL']) as _f:
    sys.meta_path.insert(0, _PlainInstall(json.load(_f), os.environ['FLOWMAP_PLAIN_INSTALL']
                                          + '.tried'))
