"""Config files by path (`path.py` or `path.py:arg`), as `config_flags` loads them, and their JSON."""
import importlib.util
import json
import os

import ml_collections
from flax import traverse_util

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


def flatten(d):
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  return traverse_util.flatten_dict(d, sep='.')


def to_dict(config):
  """A JSON-able plain dict (tuples become lists)."""
  return json.loads(config.to_json())


# Fields added after runs were saved, with the value that does what those runs did: a config.json
# without them reads as if it had them (so the run resumes and its teacher loads).
ADDED_FIELDS = {'loss.weighting': 'none', 'loss.itvm.short_target': 'terminal',
                'train.wandb_project': '', 'model.dit.qk_norm': False,
                'model.dit.time_embedding': 'fourier'}


def with_added_fields(d):
  """A config dict (nested, as in config.json) with ADDED_FIELDS filled in where their block
  exists and they do not."""
  for key, value in ADDED_FIELDS.items():
    *path, field = key.split('.')
    node = d
    for p in path:
      node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict) and field not in node:
      node[field] = value
  return d


def from_json(text):
  """The ConfigDict of `to_dict`'s JSON (a workdir's config.json), its lists tuples again."""
  def tuples(v):
    if isinstance(v, dict):
      return {k: tuples(x) for k, x in v.items()}
    return tuple(tuples(x) for x in v) if isinstance(v, list) else v
  return ml_collections.ConfigDict(tuples(with_added_fields(json.loads(text))))
