"""ITVM distillation of the class-conditional ImageNet 256×256 latent teacher
(configs/fm_imagenet256.py: SiT-XL/2's recipe), from its weights: the benchmark the field's one-step
numbers are on (docs/latents.md; the main job is this file through configs/itvm_imagenet.py).

- Teacher: trained into <workdir>/teacher when no checkpoint is there, or teacher.workdir pointing
  at one (a converted public SiT-XL/2 among them, docs/latents.md); distilled at guidance 1.5, the
  scale of SiT-XL/2's published FID, so the student's one step learns the guided flow.
- Student: the teacher's DiT-XL/2, its weights to start, in float32: ITVM's terminal term divides a
  difference of two outputs by τ, which carries about five times FM's bfloat16 error
  (benchmarks/RESULTS.md, "bfloat16"). Adam at 1e-4 with 5000 warm-up steps and clipping at 1, half of
  each batch diagonal, 400k steps at batch 256: our choices, carried from the 64 px experiment
  (configs/itvm_imagenet64.py), not a paper's.
- ITVM's options are its registry defaults (docs/itvm.md: from 2-D evidence, not an image run).
The 512 px experiment is configs/itvm_imagenet512.py.
"""
from configs import common
from configs import fm_imagenet256


def experiment(resolution):
  c = fm_imagenet256.experiment(resolution)
  c.model.dtype = 'float32'
  c.loss.name = 'itvm'
  c.loss.diag_fraction = 0.5
  c.optim.update(clip=1.0, warmup_steps=5000)
  c.train.update(num_steps=400_000, init_from_teacher=True, eval_ema_rates=(0.999, 0.9999),
                 checkpoint_every=5000)
  c.teacher = common.teacher(f'configs/fm_imagenet{resolution}.py')
  c.teacher.guidance = 1.5
  c.eval.guidance = 1.0  # the student samples the guided flow it learned
  return c


def get_config(arg=None):
  return common.with_arg(experiment(256), arg)
