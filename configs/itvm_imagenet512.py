"""configs/itvm_imagenet256.py at 512×512 (64×64×4 latents, 1024 tokens), distilling
configs/fm_imagenet512.py."""
from configs import common
from configs import itvm_imagenet256


def get_config(arg=None):
  return common.with_arg(itvm_imagenet256.experiment(512), arg)
