"""configs/fm_imagenet256.py at 512×512: 64×64×4 latents, DiT-XL/2 on 1024 tokens (SiT-XL/2's 512
px setting), everything else equal."""
from configs import common
from configs import fm_imagenet256


def get_config(arg=None):
  return common.with_arg(fm_imagenet256.experiment(512), arg)
