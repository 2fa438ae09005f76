import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import xla_flags  # noqa: E402  pylint: disable=g-import-not-at-top

# Several simulated CPU devices for the sharding tests; must be set before JAX is imported. XLA set
# to compile fast (xla_flags.py: it changes no result a test checks); subprocesses set their own.
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=8 {xla_flags.FAST}')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One compilation cache for this process and the runs it starts, kept between sessions: identical
# programs (a teacher's step in several runs, the same smoke networks in the next session) compile
# once. Its key is the program, the compile options and the JAX version, so a stale entry cannot be
# hit; it is capped at 2 GB, least recently used entries going first. FLOWMAP_TEST_CACHE names
# another folder; set empty, a fresh cache for this session only (a cold run, as on a new machine).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = os.environ.get('FLOWMAP_TEST_CACHE', os.path.join(
      os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'flowmap_jax', 'jax_tests'))
  if not _cache:
    _cache = tempfile.mkdtemp(prefix='flowmap_jax_cache_')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)  # a few hundred MB per session
  os.makedirs(_cache, exist_ok=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(2 * 1024 ** 3))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import pytest  # noqa: E402


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pytest.ini): one worker per core this process may use, at most 4 (a worker's peak
  is about 6 GB here: 8 simulated devices, compiled programs)."""
  del config
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, min(cores or 1, 4))


def pytest_collection_modifyitems(items):
  """test_images.py last: its image runs start with the session in their own process (below) and
  have the rest of the suite's time to finish."""
  items.sort(key=lambda item: item.module.__name__ == 'test_images')


@pytest.fixture(scope='session')
def image_runs(request):
  """The image runs of test_images.py (tests/image_runs.py), started once in the background."""
  return request.config.stash[_IMAGE_RUNS]


_IMAGE_RUNS = pytest.StashKey()


@pytest.fixture(scope='session', autouse=True)
def _start_image_runs(request, tmp_path_factory):
  """Starts the image runs as the session starts, when any test of test_images.py is selected: they
  take minutes in their own process and run beside the rest of the suite. pytest-xdist's workers
  share one set, in the folder above their own temporary folders (the first worker starts it)."""
  if not any(item.module.__name__ == 'test_images' for item in request.session.items):
    yield
    return
  import image_runs  # pylint: disable=g-import-not-at-top
  worker = os.environ.get('PYTEST_XDIST_WORKER')
  base = tmp_path_factory.getbasetemp()
  runs = image_runs.Background.shared((base.parent if worker else base) / 'image_runs')
  request.config.stash[_IMAGE_RUNS] = runs
  yield
  # Another worker's image tests may still wait for the runs; alone, or stopping early, end them.
  runs.stop(timeout=1500 if worker and not request.session.shouldstop else 0)


@pytest.fixture(scope='session')
def teacher_dir(tmp_path_factory):
  """A smoke flow-matching teacher on the checkerboard, trained once for the whole session."""
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  from flowmap_jax import train  # pylint: disable=g-import-not-at-top
  d = str(tmp_path_factory.mktemp('teacher'))
  train.train_and_evaluate(config_io.load('configs/fm_checkerboard.py:smoke'), d)
  return d


@pytest.fixture(scope='session')
def student_dir(teacher_dir, tmp_path_factory):
  """The embedded default at smoke size (itvm_checkerboard:smoke distilled from teacher_dir),
  trained once for the whole session: what `flowmap_jax.load` and the README's example read."""
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  from flowmap_jax import train  # pylint: disable=g-import-not-at-top
  d = str(tmp_path_factory.mktemp('student'))
  config = config_io.load('configs/itvm_checkerboard.py:smoke')
  config.teacher.workdir = teacher_dir
  train.train_and_evaluate(config, d)
  return d


@pytest.fixture
def loss_config():
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  return config_io.load('configs/itvm_checkerboard.py').loss
