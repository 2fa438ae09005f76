"""Prints this environment's Python and every installed distribution (name==version), then checks
the floors setup.py names (python_requires and each `>=` of install_requires); exit 1 naming every
one that is not met, e.g. a JAX that a resolver took below the floor.

  python launch/check_install.py [path/to/setup.py]    # launch/tpu_pod.sh install runs it

Standard library only (it runs before anything is known to be installed right).
"""
import ast
import importlib.metadata
import os
import platform
import re
import sys

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'setup.py')


def setup_fields(path):
  """python_requires and install_requires, as written in setup.py's setup(...) call."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'setup':
      fields = {k.arg: ast.literal_eval(k.value) for k in node.keywords
                if k.arg in ('python_requires', 'install_requires')}
      return fields.get('python_requires', ''), fields.get('install_requires', [])
  raise ValueError(f'{path}: no setup(...) call')


def release(version):
  """'0.10.2rc1' -> (0, 10, 2): the release numbers, for comparing with a floor."""
  m = re.match(r'\d+(\.\d+)*', version)
  return tuple(int(x) for x in m.group(0).split('.')) if m else ()


def floors(requirements):
  """[(distribution, floor)] of the `name[extras]>=x` requirements."""
  out = []
  for req in requirements:
    m = re.match(r'\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)', req)
    if m:
      out.append((m.group(1), m.group(3)))
  return out


def problems(setup_path=SETUP):
  python_requires, requirements = setup_fields(setup_path)
  found = []
  m = re.match(r'\s*>=\s*([0-9.]+)', python_requires)
  if m and release(platform.python_version()) < release(m.group(1)):
    found.append(f'Python {platform.python_version()} is below python_requires {python_requires}')
  for name, floor in floors(requirements):
    try:
      version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found.append(f'{name} is not installed (setup.py needs {name}>={floor})')
      continue
    if release(version) < release(floor):
      found.append(f'{name} {version} is below the floor {floor} in setup.py')
  return found


def main(argv):
  setup_path = argv[1] if len(argv) > 1 else SETUP
  print(f'python {platform.python_version()} ({sys.executable})')
  versions = {(d.metadata['Name'] or '?'): d.version for d in importlib.metadata.distributions()}
  for name in sorted(versions, key=str.lower):
    print(f'{name}=={versions[name]}')
  found = problems(setup_path)
  for p in found:
    print(f'install check: {p}', file=sys.stderr)
  if found:
    print('install check: FAILED; this environment does not run flowmap_jax as setup.py asks '
          '(a Python >= 3.11 venv gets JAX at its floor or newer).', file=sys.stderr)
    return 1
  jax = versions.get('jax', 'not installed')
  print(f'install check: every floor of {os.path.basename(setup_path)} holds (jax {jax}).')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
