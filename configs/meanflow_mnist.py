"""MeanFlow on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000 steps) with
MeanFlow's image recipe as configs/meanflow_cifar10.py translates it from the official code: both
times logit-normal, sigmoid(N(+0.4, 1)), three quarters of each batch diagonal, the adaptive weighting
ℓ / sg((ℓ + 0.01)^1). No guidance in the target (ω = 1, κ = 0): LSD and PSD have none, so the
self-distillation rows compare unguided; `--config.loss.meanflow.guidance_kappa=0.5` is the
official ImageNet guidance (effective scale 2, the distillation teacher's).

Budget (lsd_mnist's): not shown converged. At 1000 of the 3000 steps (MNIST study, seed 0): 26.7 /
19.2 / 22.7 % digit accuracy at 1/2/4 steps, blurred 1-step samples."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'meanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.75
  c.loss.meanflow.adaptive_p, c.loss.meanflow.adaptive_c = 1.0, 0.01
  return c
