import os
import sys

# Several simulated CPU devices for the sharding tests; must be set before JAX is imported.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture
def loss_config():
  from configs import base
  return base.get_config().loss
