"""Shortcut models on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000 steps) with
the official recipe's loss values (kvfrans/shortcut-models train.py `model_config`, as
configs/shortcut_checkerboard.py): T = 128 discrete step sizes, one eighth of each batch bootstrap
(diag_fraction 7/8), bootstrap targets from the target EMA at 0.999, no dt bias, targets clipped at
±4 (theirs, for latents of unit variance; MNIST in [−1, 1] with noise of std 0.5 stays inside it).
No guidance in the bootstrap targets (their default bootstrap_cfg = 0), as for the other
self-distillation rows; `--config.loss.shortcut.bootstrap_cfg=True` is their ImageNet setting
(cfg_scale 1.5).

Budget (lsd_mnist's): far from converged for its jumps. At 1000 of the 3000 steps (MNIST study,
seed 0) its velocity (d → 0) is learnt but its jumps of 1, 1/2 and 1/4 are not: their samples are
noise (10.4 % digit accuracy, chance). At batch 64 one eighth of the batch is 8 bootstrap examples,
about one per step size, and the 0.999 target EMA still holds 37 % of the random initialisation
after 1000 steps (0.999^1000). With --config.loss.shortcut.ema_rate=0.99 the same 1000 steps learn
the jumps (24.3 / 36.8 / 52.5 % at 1/2/4 steps): at the published 0.999, budget many times the
steps that make 0.999^steps small."""
from configs import lsd_mnist


def get_config(arg=None):
  c = lsd_mnist.get_config(arg)
  c.loss.name = 'shortcut'
  c.loss.diag_fraction = 7 / 8
  return c
