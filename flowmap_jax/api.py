"""Trained models from Python: `flowmap_jax.load(workdir)` (docs/api.md).

    model = flowmap_jax.load('runs/itvm_checkerboard')
    x = model.sample(jax.random.key(0), 10_000, steps=1)

`load` reads the config a run saved beside its checkpoints (`config.json`), restores the evaluation
EMAs of the latest checkpoint that has them onto the caller's first local device (whatever mesh the
run trained on: a checkpoint written on 8 devices or several hosts restores on 1), and returns a
`Model`. A flow-map run (every loss but fm) samples by its jumps (docs/sampling.md §1); a
flow-matching run (a teacher) by its ODE, Euler at `steps` or adaptive when `steps` is None
(docs/sampling.md §2).
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import evaluate
from flowmap_jax import flow_map
from flowmap_jax import progress
from flowmap_jax import sampling
from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax.interpolants import bcast


def _times(v, n, dtype):
  """A scalar or a (B,) array of times as a (B,) array."""
  return jnp.broadcast_to(jnp.asarray(v, dtype), (n,))


@dataclasses.dataclass(frozen=True)
class Model:
  """A trained network v_θ(s, t, x | y) with its config (docs/api.md).

  `learns_flow_map`: X_θ(s, t, x) = x + (t − s) v_θ(s, t, x) is the model's own jump (distilled or
  self-distilled); otherwise (fm) the model is a velocity b_t(x) = v_θ(t, t, x) and its jumps solve
  the ODE.
  """
  config: Any
  exp: state_lib.Experiment
  params: Any            # the evaluation EMA `ema` (what the run's evaluation sampled)
  ema: str               # its rate, as in config.train.eval_ema_rates
  step: int              # the checkpoint's training step
  workdir: str

  @property
  def learns_flow_map(self):
    return self.exp.loss.learns_flow_map

  @property
  def num_classes(self):
    return self.exp.num_classes

  @property
  def data_shape(self):
    return self.exp.data_shape

  def _labels(self, y, n):
    if y is None:
      return None
    if not self.num_classes:
      raise ValueError('labels were given, but this model is not class-conditional.')
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))
    return y

  def _guided_apply(self, guidance):
    """v_θ with classifier-free guidance w: v_u + w (v_c − v_u), v_u at the null label."""
    if guidance == 1.0:
      return self.exp.apply_fn
    if not self.num_classes or not self.config.loss.get('label_dropout', 0.0):
      raise ValueError(f'guidance={guidance} needs a class-conditional model trained with label '
                       'dropout (loss.label_dropout > 0): the null label it guides against is '
                       'learned from the dropped labels.')
    return teacher_lib.guided_apply_fn(self.exp, guidance)

  def velocity(self, t, x, y=None, guidance=1.0):
    """b_t(x | y) = v_θ(t, t, x | y), the model's instantaneous velocity (docs/conventions.md §2);
    t a scalar or (B,), x of shape (B, ...) in the data space."""
    x = jnp.asarray(x, jnp.float32)
    t = _times(t, x.shape[0], x.dtype)
    apply = self._guided_apply(guidance)
    return flow_map.velocity(apply, self.params, t, x, self._labels(y, x.shape[0]))

  def jump(self, s, t, x, y=None, guidance=1.0, rtol=None, atol=None):
    """X(s, t, x): for a flow map its own jump x + (t − s) v_θ(s, t, x | y) (one evaluation); for a
    velocity model the adaptive solve of its ODE from s to t, to the tolerances rtol and atol
    (default the config's eval.ode_rtol and eval.ode_atol; the error is controlled over the whole
    batch). s, t scalars or (B,) arrays."""
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    s, t, y = _times(s, n, x.dtype), _times(t, n, x.dtype), self._labels(y, n)
    apply = self._guided_apply(guidance)
    if self.learns_flow_map:
      return flow_map.X(apply, self.params, s, t, x, y)
    # dx/dτ = (t − s) b_{s + τ (t − s)}(x) on τ ∈ [0, 1]: per-example s and t in one batched solve.
    b = lambda tt, xx, yy: apply(self.params, tt, tt, xx, yy)
    rescaled = lambda tau, xx, yy: bcast(t - s, xx) * b(s + tau * (t - s), xx, yy)
    e = self.config.eval
    rtol, atol = e.ode_rtol if rtol is None else rtol, e.ode_atol if atol is None else atol
    return sampling.adaptive(rescaled, x, e.teacher_ode, rtol, atol, y=y)[0]

  def sample(self, rng, n, steps=None, labels=None, guidance=1.0, batch_size=None, decode=True):
    """n samples from the base noise N(0, σ0² I) of `rng`: images in [-1, 1], NHWC
    (`flowmap_jax.data.images.quantize` makes uint8); a latent run's latents decoded by its VAE
    (data.vae), or with decode=False the model's latents themselves.

    steps: a flow map's number of jumps on the uniform grid (default 1); a velocity model's Euler
    steps, or None for its adaptive ODE. labels: None (uniform classes for a class-conditional
    model), an int or (n,) ints. guidance: classifier-free guidance w (1 = none). batch_size: how
    many are sampled at once (default all n); batches draw their noise from fold_in(rng, i)."""
    if self.learns_flow_map:
      kind, steps = 'flow_map', 1 if steps is None else int(steps)
    else:
      kind = 'ode' if steps is None else 'euler'
    if steps is not None and steps < 1:
      raise ValueError(f'steps={steps} must be >= 1.')
    if guidance != 1.0:
      self._guided_apply(guidance)   # the same check for every kind
    run = evaluate.sampler(self.exp, kind, steps, guidance)
    batch_size = int(batch_size or n)
    if labels is not None:
      labels = np.asarray(self._labels(labels, n))

    def one(key, m, start):
      y = None if labels is None else jnp.asarray(labels[start:start + m])
      out = run(self.params, key, m, y)
      out = out[0] if kind == 'ode' else out
      return jnp.asarray(self.exp.to_images(out)) if decode and self.exp.is_latent else out

    if batch_size >= n:
      return one(rng, n, 0)
    out, starts = [], range(0, n, batch_size)
    for i, start in enumerate(progress.track(starts, total=len(starts), desc='sample')):
      out.append(np.asarray(one(jax.random.fold_in(rng, i), min(batch_size, n - start), start)))
    return jnp.asarray(np.concatenate(out))


def _one_device_mesh():
  return Mesh(np.asarray(jax.local_devices()[:1]).reshape(1, 1), ('data', 'fsdp'))


def load(workdir, ema=None) -> Model:
  """The trained model of `workdir`: its saved config and the evaluation EMA `ema` (a rate of
  train.eval_ema_rates; default the slowest, which evaluation samples) of its latest checkpoint."""
  workdir = str(workdir)
  saved = epath.Path(workdir) / 'config.json'
  if not saved.exists():
    raise FileNotFoundError(f'{workdir} holds no config.json: it is not a flowmap_jax workdir (a '
                            'run writes one there when it starts).')
  if not checkpoint.has_checkpoint(workdir):
    raise FileNotFoundError(f'{workdir} holds no checkpoint yet ({workdir}/checkpoints).')
  config = config_io.from_json(saved.read_text())
  exp = state_lib.Experiment(config, mesh=_one_device_mesh())
  step, emas, errors = checkpoint.restore_eval_emas(workdir, exp)
  if emas is None:
    raise ValueError(f'No checkpoint in {workdir}/checkpoints restores with its config.json: '
                     + '; '.join(f'step {s}: {m}' for s, m in errors))
  if ema is None:
    key = max(emas, key=float)
  else:
    key = next((k for k in emas if float(k) == float(ema)), None)
    if key is None:
      raise ValueError(f'ema={ema!r} is not one of this run\'s evaluation EMAs {sorted(emas)}.')
  return Model(config, exp, emas[key], key, int(step), workdir)

