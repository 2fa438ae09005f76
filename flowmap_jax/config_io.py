"""Config files by path (`path.py` or `path.py:arg`), as `config_flags` loads them, and their JSON."""
import importlib.util
import json
import os

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(path):
  """A config path as given, else relative to the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(REPO_ROOT, path)


def load(spec: str) -> ml_collections.ConfigDict:
  """`configs/x.py` or `configs/x.py:arg` -> get_config() or get_config(arg)."""
  path, _, arg = spec.partition(':')
  path = resolve(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'Config file {path!r} does not exist.')
  module_spec = importlib.util.spec_from_file_location('_flowmap_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def flatten(d, prefix=''):
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def to_dict(config):
  """A JSON-able plain dict (tuples become lists)."""
  return json.loads(config.to_json())
