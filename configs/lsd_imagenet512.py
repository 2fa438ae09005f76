"""configs/lsd_imagenet256.py at 512×512 (64×64×4 latents, 1024 tokens)."""
from configs import common
from configs import lsd_imagenet256


def get_config(arg=None):
  return common.with_arg(lsd_imagenet256.experiment(512), arg)
