"""Improved MeanFlow on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000 steps)
with iMF's loss recipe from its official code (Lyy-iiis/imeanflow, as
configs/imeanflow_checkerboard.py): both times sigmoid(N(+0.4, 1)), half of each batch diagonal, the
adaptive weighting ℓ / sg((ℓ + 0.01)^1). No guidance (ω = 1), as for the other self-distillation
rows; `--config.loss.imeanflow.guidance_omega=2` guides the target at the distillation teacher's
scale.

Budget (lsd_mnist's): not shown converged. At 1000 of the 3000 steps (MNIST study, seed 0): 41.7 /
23.4 / 31.3 % digit accuracy at 1/2/4 steps."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'imeanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.5
  return c
