"""FM on celeb_a (configs/base.py: image_experiment has the settings and their sources)."""
from configs import base


def get_config(arg=None):
  return base.image_experiment('fm', 'celeb_a', arg)
