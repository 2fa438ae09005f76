import atexit
import os
import shutil
import sys
import tempfile

# Several simulated CPU devices for the sharding tests; must be set before JAX is imported.
# XLA's backend optimisation off in this process: it halves compile times (U-Nets compile for tens
# of seconds on 2 cores) and changes no result a test checks; subprocesses set their own flags.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_backend_optimization_level=0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One compilation cache for the session (this process and the runs it starts): identical programs,
# e.g. a teacher's step in several runs, compile once.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='flowmap_jax_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)  # a few hundred MB per session
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture
def loss_config():
  from configs import base
  return base.get_config().loss
