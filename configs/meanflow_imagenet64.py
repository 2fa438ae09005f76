"""Class-conditional MeanFlow on ImageNet 64×64, as MeanFlow's official code trains it
(Gsunshine/meanflow: configs/default.py and run_b4.yml), translated to our time convention.

- Network: DiT-B/4 (their run_b4.yml), here on 64×64 pixels: 16×16 tokens of 4×4×3, where theirs
  are the 32×32×4 latents of 256×256 images (the same 256 tokens; the latent experiment is
  configs/meanflow_imagenet256.py).
- Times: both logit-normal, sigmoid(N(+0.4, 1)) (their mean −0.4 with noise at t = 1), three quarters
  of each batch diagonal; the adaptive weighting ℓ / sg((ℓ + 0.01)^1).
- Guidance in the target: ω = 1, κ = 0.5 over every s (their t_start 0, t_end 1), labels dropped to
  the null class 10 % of the time. The guided field is learned, so sampling uses no further guidance
  (eval.guidance = 1).
- Adam (b2 = 0.95) at 1e-4, constant, batch 256 (their run_b4.yml).
Everything else (data, EMAs, evaluation) is configs/fm_imagenet64.py.
"""
from configs import common
from configs import fm_imagenet64


def get_config(arg=None):
  arg = common.check_arg(arg)
  c = fm_imagenet64.get_config(arg)
  c.model.name = 'dit'
  c.loss.name = 'meanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.75
  c.loss.label_dropout = 0.1
  m = c.loss.meanflow
  m.adaptive_p, m.adaptive_c = 1.0, 0.01
  m.guidance_omega, m.guidance_kappa, m.guidance_s_min, m.guidance_s_max = 1.0, 0.5, 0.0, 1.0
  c.eval.guidance = 1.0
  c.optim.update(name='adam', lr=1e-4, b1=0.9, b2=0.95, schedule='constant', warmup_steps=0)
  if arg != 'smoke':   # :smoke keeps its own tiny batch
    c.data.batch_size = 256
  return c
