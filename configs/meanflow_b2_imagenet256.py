"""configs/meanflow_imagenet256.py with DiT-B/2 (MeanFlow's MF-B/2), everything else equal: the
cheaper sibling for trying a change before an XL/2 run."""
from configs import common
from configs import meanflow_imagenet256


def get_config(arg=None):
  return common.with_arg(meanflow_imagenet256.experiment(256, size='B'), arg)
