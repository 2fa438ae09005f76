"""Class-conditional MeanFlow on ImageNet 256×256 latents with DiT-XL/2: the setting of MeanFlow's
1-NFE FID 3.43, with the values of its official code (Gsunshine/meanflow configs/default.py,
run_b4.yml), translated to our time convention.

- Data: 32×32×4 latents of sd-vae-ft-mse (their `dataset.vae = 'mse'`; give that file as data.vae),
  scaled by 0.18215, σ0 = 1 (configs/fm_imagenet256.py says why).
- Times: both logit-normal, sigmoid(N(+0.4, 1)) (their P_mean −0.4 with noise at t = 1), three
  quarters of each batch diagonal (their data_proportion 0.75); the adaptive weighting
  ℓ / sg((ℓ + 0.01)^1) (norm_p 1, norm_eps 0.01).
- Guidance in the target: ω = 1, κ = 0.5 over every s (their t_start 0, t_end 1), labels dropped 10 %.
  These are the code's defaults; the paper's per-size guidance for XL/2 is not in the code and was not
  checked here: set loss.meanflow.guidance_* to it when you have it. The guided field is learned, so
  sampling uses no further guidance (eval.guidance = 1).
- Adam (b2 = 0.95) at 1e-4, constant, batch 256, EMA 0.9999; 240 epochs of ImageNet's 1,281,167
  images at batch 256 are 1.2M steps.
configs/meanflow_b2_imagenet256.py is its cheaper sibling (DiT-B/2); configs/meanflow_imagenet512.py
the 512 px experiment.
"""
from configs import common
from configs import fm_imagenet256


def experiment(resolution, size='XL'):
  c = fm_imagenet256.experiment(resolution)
  c.model.dit.size = size
  c.model.dtype = 'float32'     # their training.half_precision = False
  c.loss.name = 'meanflow'
  c.loss.time_sampler, c.loss.logit_mean, c.loss.logit_std = 'logit_normal', 0.4, 1.0
  c.loss.diag_fraction = 0.75
  c.loss.label_dropout = 0.1
  m = c.loss.meanflow
  m.adaptive_p, m.adaptive_c = 1.0, 0.01
  m.guidance_omega, m.guidance_kappa, m.guidance_s_min, m.guidance_s_max = 1.0, 0.5, 0.0, 1.0
  c.optim.update(name='adam', lr=1e-4, b1=0.9, b2=0.95, clip=0.0, schedule='constant',
                 warmup_steps=0)
  c.train.num_steps = 1_200_000
  c.eval.guidance = 1.0
  return c


def get_config(arg=None):
  return common.with_arg(experiment(256), arg)
