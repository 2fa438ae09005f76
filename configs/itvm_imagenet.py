"""The main job: ITVM distillation of a class-conditional ImageNet 64×64 flow-matching teacher
(configs/fm_imagenet.py, DDPM++/ADM-size U-Net), from its weights, with bfloat16 activations.

The teacher is trained first into <workdir>/teacher if no checkpoint is there (or point
teacher.workdir at one). DiT instead of the U-Net, for student and teacher alike:
  --config.model.name=dit --config.model.size=B --config.model.patch_size=4
(then give the teacher the same network through its own config, or teacher.workdir to a DiT teacher).
ITVM's defaults come from our 2-D evidence (ALGORITHMS.md §3.4), not from an image run.
"""
from configs import base


def get_config(arg=None):
  return base.image_experiment('itvm', 'imagenet2012', arg, teacher='configs/fm_imagenet.py')
