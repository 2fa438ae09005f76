"""Class-conditional LSD self-distillation on ImageNet 256×256 latents: configs/fm_imagenet256.py
(DiT-XL/2, SiT's optimiser and data) with loss.name='lsd', three quarters of each batch diagonal and
the learned loss weighting as the self-distillation paper trains its image models; no teacher;
1.2M steps, configs/meanflow_imagenet256.py's.
The 512 px experiment is configs/lsd_imagenet512.py."""
from configs import common
from configs import fm_imagenet256


def experiment(resolution):
  c = fm_imagenet256.experiment(resolution)
  c.loss.name = 'lsd'
  c.loss.diag_fraction = 0.75
  c.loss.weighting = 'learned'
  c.eval.guidance = 1.0
  c.train.num_steps = 1_200_000  # MeanFlow's budget: the two self-distillations at equal steps
  return c


def get_config(arg=None):
  return common.with_arg(experiment(256), arg)
