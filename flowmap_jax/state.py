"""What a run derives from its config: the network, σ0, the optimiser, the TrainState and its shardings.

`Experiment(config)` is built from the config alone; nothing here trains, loads or evaluates.
Keys: the state holds a base key; step k draws everything from fold_in(base key, k) (`step_keys`),
so a resumed run is bit for bit the run it would have been.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowmap_jax import losses
from flowmap_jax import models
from flowmap_jax import parallel
from flowmap_jax.data import images
from flowmap_jax.data import latents
from flowmap_jax.data import toy

OPTIMIZERS = ('adam', 'adamw', 'radam')
SCHEDULES = ('constant', 'cosine', 'sqrt')
WEIGHTINGS = ('none', 'learned')   # loss.weighting


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32: steps taken (accepted or skipped)
  params: Any            # θ
  opt_state: Any
  target_ema: Any        # θ⁻, the loss's target EMA at its registry rate ({} when it reads none)
  eval_emas: Any         # {str(rate): params} for sampling and evaluation
  rng: jax.Array         # base key data (uint32); step keys are fold_in(rng, step)
  bad_steps: jax.Array   # int32: non-finite steps skipped so far
  last_bad_step: jax.Array  # int32: the latest non-finite step (-1: none)
  last_bad_metrics: Any  # {name: scalar}: loss and aux terms at that step
  # The learned loss weighting w_φ(s, t) (docs/losses.md §9): {'params': φ, 'opt_state': ...}, trained
  # jointly with θ by its own copy of the optimiser; {} when loss.weighting = 'none'.
  weighting: Any = flax.struct.field(default_factory=dict)


def slowest_ema(state_or_emas):
  """The evaluation EMA with the highest rate (of a TrainState or its eval_emas dict)."""
  emas = getattr(state_or_emas, 'eval_emas', state_or_emas)
  return emas[max(emas, key=float)]


def base_keys(seed):
  """(key of the initial parameters, base key of the steps) of a run with this seed."""
  return jax.random.split(jax.random.key(seed))


def step_keys(rng, step):
  """(data, noise, loss) keys of step `step` from the state's base key data `rng`."""
  return jax.random.split(jax.random.fold_in(jax.random.wrap_key_data(rng), step), 3)


def learning_rate(optim, num_steps):
  lr, warm = optim.lr, optim.warmup_steps
  if optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(num_steps - warm, 1))
  elif optim.schedule == 'sqrt':
    # The self-distillation paper's decay: lr / sqrt(max(step / sqrt_steps, 1)).
    main = lambda step: lr / jnp.sqrt(jnp.maximum(step / optim.sqrt_steps, 1.0))
  else:
    raise ValueError(f'Unknown optim.schedule {optim.schedule!r}; known: {SCHEDULES}.')
  if warm:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])
  return main


def optimizer(optim, num_steps):
  lr = learning_rate(optim, num_steps)
  if optim.name == 'adam':
    opt = optax.adam(lr, b1=optim.b1, b2=optim.b2)
  elif optim.name == 'adamw':
    opt = optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
  elif optim.name == 'radam':
    opt = optax.radam(lr, b1=optim.b1, b2=optim.b2)
  else:
    raise ValueError(f'Unknown optim.name {optim.name!r}; known: {OPTIMIZERS}.')
  return optax.chain(optax.clip_by_global_norm(optim.clip), opt) if optim.clip else opt


class Experiment:
  """The network, σ0, data shape, optimiser, loss and mesh of a config, and its TrainState."""

  def __init__(self, config, mesh=None):
    self.config = config
    # A latent data set is evaluated as images: its samples are decoded (data/latents.py).
    self.is_latent = latents.is_latent(config.data)
    self.is_image = images.is_image(config.data) or self.is_latent
    self.sigma0 = float(config.data.sigma0) if self.is_image else toy.sigma0(config.data)
    self.num_classes = (latents.num_classes(config.data) if self.is_latent else
                        images.num_classes(config.data) if self.is_image else 0)
    self.model = models.get(config.model, sigma=self.sigma0, num_classes=self.num_classes)
    self.tx = optimizer(config.optim, config.train.num_steps)
    self.mesh = parallel.make_mesh(config.mesh) if mesh is None else mesh
    self.loss = losses.spec(config.loss.name)
    self.target_ema_rate = self.loss.target_ema_rate(config.loss)
    self.data_shape = (latents.shape(config.data) if self.is_latent else
                       images.image_shape(config.data) if self.is_image else (2,))
    self.learned_weighting = config.loss.get('weighting', 'none') == 'learned'
    self.weighting_model = models.LossWeighting() if self.learned_weighting else None

  def to_images(self, x):
    """Samples in the data space -> images in [-1, 1] (NHWC host arrays): a latent run's decoded
    by its VAE (data.vae, loaded on first use; data/latents.py), an image run's as they are."""
    if not self.is_latent:
      return x
    if getattr(self, '_decode', None) is None:
      self._decode = latents.decoder(self.config.data)
    return self._decode(np.asarray(x))

  def apply_fn(self, params, s, t, x, y=None):
    """v_θ(s, t, x | y) for sampling and targets outside training: no dropout."""
    return self.model.apply({'params': params}, s, t, x, y)

  def train_apply_fn(self, dropout_key):
    """v_θ with dropout on (when the model has any). Every call in one step uses the same key, so
    calls of equal shape share a mask: a self-distillation target sees the sub-network that
    the prediction does."""
    if not models.dropout_rate(self.config.model):
      return self.apply_fn
    return lambda params, s, t, x, y=None: self.model.apply(
        {'params': params}, s, t, x, y, train=True, rngs={'dropout': dropout_key})

  def loss_extras(self, phi=None):
    """The keyword arguments a loss gets beyond the common ones: `weighting` (w_φ, when learned) and
    `null_label` (for a loss that guides its target, on class-conditional data)."""
    extra = {}
    if phi is not None:
      extra['weighting'] = self.weighting_fn(phi)
    if self.loss.takes_null_label and self.num_classes:
      extra['null_label'] = self.num_classes
    return extra

  def weighting_fn(self, phi):
    """(s, t) -> w_φ(s, t), the learned loss weighting a loss receives as `weighting`."""
    return lambda s, t: self.weighting_model.apply({'params': phi}, s, t)

  def init_weighting(self, rng):
    """The weighting's state: φ (its output layer zero, so w = 0) and its optimiser state."""
    if not self.learned_weighting:
      return {}
    z = jnp.zeros((1,))
    # A key no step draws (steps fold in their index, far below 2³² − 1).
    phi = self.weighting_model.init(jax.random.fold_in(rng, 2**32 - 1), z, z)['params']
    return {'params': phi, 'opt_state': self.tx.init(phi)}

  def example_labels(self, n):
    """Labels for shape-only calls (init, eval_shape): zeros, or None when unconditional."""
    return jnp.zeros((n,), jnp.int32) if self.num_classes else None

  def init_params(self, rng):
    z = jnp.zeros((1,))
    return self.model.init(rng, z, z, jnp.zeros((1,) + self.data_shape),
                           self.example_labels(1))['params']

  def state_from_params(self, params, rng):
    c = self.config
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
        target_ema=params if self.target_ema_rate is not None else {},
        eval_emas={str(r): params for r in c.train.eval_ema_rates},
        rng=jax.random.key_data(rng), bad_steps=jnp.zeros((), jnp.int32),
        last_bad_step=-jnp.ones((), jnp.int32),
        last_bad_metrics={k: jnp.zeros((), jnp.float32) for k in self.loss_metric_names},
        weighting=self.init_weighting(rng))

  @functools.cached_property
  def loss_metric_names(self):
    """'loss' and the loss's aux keys (shapes only: nothing runs)."""
    x = jnp.zeros((8,) + self.data_shape)
    params = jax.eval_shape(self.init_params, jax.random.key(0))
    teacher = lambda t, x_, y=None: x_
    extra = self.loss_extras()
    if self.learned_weighting:
      extra['weighting'] = lambda s, t: jnp.zeros_like(s)
    _, aux = jax.eval_shape(lambda p: self.loss.fn(
        self.apply_fn, p, x, x, jax.random.key(0), config=self.config.loss, teacher=teacher,
        y=self.example_labels(8), **extra), params)
    return ('loss',) + tuple(sorted(aux))

  def init_state(self, init_params=None):
    """The initial state, built directly with its shardings (jit with out_shardings)."""
    init_key, base_key = base_keys(self.config.seed)
    make = lambda p: self.state_from_params(self.init_params(init_key) if p is None else p,
                                            base_key)
    return jax.jit(make, out_shardings=self.state_shardings())(init_params)

  def _state_shapes(self):
    return jax.eval_shape(lambda: self.state_from_params(
        self.init_params(jax.random.key(0)), jax.random.key(0)))

  def abstract_state(self):
    shardings = self.state_shardings()
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        self._state_shapes(), shardings)

  def state_shardings(self):
    """Parameter-shaped leaves (params, optimiser moments, EMAs) by the FSDP rule; the rest
    (step, key, counters) replicated."""
    return parallel.tree_shardings(self.mesh, self._state_shapes(), self.config.mesh.fsdp_min_size)
