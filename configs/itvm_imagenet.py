"""The main job: ITVM distillation on ImageNet 256×256 in the latent space of Stable Diffusion's VAE
(DiT-XL/2, the benchmark the field compares on). It is configs/itvm_imagenet256.py; read that file.
The pixel-space 64×64 experiment is configs/itvm_imagenet64.py."""
from configs.itvm_imagenet256 import get_config  # pylint: disable=unused-import
