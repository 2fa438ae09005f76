"""The pure train step: loss and gradient, optimiser update, EMAs, and the on-device non-finite guard.

`train_step(exp, state, batch, teacher_params, teacher_velocity)` is a pure function of its
arguments; `jit_train_step` compiles it once with the state's shardings and donates the state.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from flowmap_jax import parallel
from flowmap_jax import state as state_lib
from flowmap_jax.data import images
from flowmap_jax.data import toy


def batch_data(exp, batch, k_data, k_label):
  """(x1, y) of a step: {} draws 2-D data on device from `k_data`; {'image': uint8, 'label': int}
  from the image pipeline is mapped to [-1, 1], {'latent': float32, 'label': int} from the latent
  pipeline is used as it is; labels dropped to the null class at loss.label_dropout
  (classifier-free guidance)."""
  c = exp.config
  if 'latent' in batch:   # normalised on the host (data/latents.py)
    x1 = batch['latent']
  elif 'image' not in batch:
    x1 = toy.sample(c.data.name, k_data, c.data.batch_size)
    return jax.lax.with_sharding_constraint(x1, parallel.batch_sharding(exp.mesh)), None
  else:
    x1 = images.to_unit_range(batch['image'])
  y = None
  if exp.num_classes:
    y = batch['label'].astype(jnp.int32)
    if c.loss.label_dropout:
      drop = jax.random.bernoulli(k_label, c.loss.label_dropout, y.shape)
      y = jnp.where(drop, exp.num_classes, y)
  return x1, y


def loss_of_params(exp, state, batch, teacher_params, teacher_velocity=None):
  """The step's loss as a function of the online parameters only, params ↦ (loss, aux): this
  step's data, noise, labels, dropout, teacher and target EMA fixed (train_step differentiates it;
  benchmarks/step_cost.py reads its saved residuals). `teacher_velocity(teacher_params)` is the
  teacher's (t, x, y) -> b_t(x | y) (teacher.velocity_fn)."""
  c = exp.config
  k_data, k_noise, k_loss = state_lib.step_keys(state.rng, state.step)
  k_dropout, k_label = jax.random.fold_in(k_loss, 1), jax.random.fold_in(k_loss, 2)
  x1, y = batch_data(exp, batch, k_data, k_label)
  x0 = jnp.asarray(exp.sigma0, x1.dtype) * jax.random.normal(k_noise, x1.shape, x1.dtype)
  teacher = None if teacher_params is None else teacher_velocity(teacher_params)
  ema = state.target_ema if exp.target_ema_rate is not None else None
  apply_fn = exp.train_apply_fn(k_dropout)

  # A loss with a curriculum over training (its entry's takes_step) reads this step's index.
  at_step = {'step': state.step} if exp.loss.takes_step else {}

  def loss_of(params, phi=None):
    # phi: the learned weighting's parameters (loss.weighting = 'learned'), else None.
    return exp.loss.fn(apply_fn, params, x0, x1, k_loss, config=c.loss, ema_params=ema,
                       teacher=teacher, y=y, **exp.loss_extras(phi), **at_step)

  return loss_of


def train_step(exp, state, batch, teacher_params, teacher_velocity=None):
  """One optimiser step; a non-finite loss or gradient is skipped on device.

  Returns (new state, metrics of this step).
  """
  c = exp.config
  loss_of = loss_of_params(exp, state, batch, teacher_params, teacher_velocity)
  weighting = state.weighting
  if exp.learned_weighting:  # θ and φ descend the same weighted loss, each by its optimiser
    (loss, aux), (grads, phi_grads) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(
        state.params, weighting['params'])
    phi_updates, phi_opt = exp.tx.update(phi_grads, weighting['opt_state'], weighting['params'])
    weighting = {'params': optax.apply_updates(weighting['params'], phi_updates),
                 'opt_state': phi_opt}
    phi_finite = jnp.isfinite(optax.global_norm(phi_grads))
  else:
    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    phi_finite = True
  updates, opt_state = exp.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)

  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & phi_finite
  # After more than max_bad_steps non-finite steps the state freezes: the host stops the run at
  # its next check without a device sync on every step, and nothing bad was ever applied.
  halted = state.bad_steps > c.train.max_bad_steps
  accept = finite & ~halted
  keep = finite | halted
  pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
  ema_update = lambda rate, e: jax.tree.map(lambda a, b: rate * a + (1 - rate) * b, e, params)
  target_ema = state.target_ema
  if exp.target_ema_rate is not None:
    target_ema = pick(ema_update(exp.target_ema_rate, target_ema), target_ema)
  new = state.replace(
      step=state.step + jnp.where(halted, 0, 1).astype(jnp.int32),
      params=pick(params, state.params),
      opt_state=pick(opt_state, state.opt_state),
      weighting=pick(weighting, state.weighting),
      target_ema=target_ema,
      eval_emas={k: pick(ema_update(float(k), e), e) for k, e in state.eval_emas.items()},
      bad_steps=state.bad_steps + jnp.where(keep, 0, 1).astype(jnp.int32),
      last_bad_step=jnp.where(keep, state.last_bad_step, state.step),
      last_bad_metrics={k: jnp.where(keep, v, dict(aux, loss=loss)[k].astype(v.dtype))
                        for k, v in state.last_bad_metrics.items()})
  metrics = dict(aux, loss=loss, grad_norm=grad_norm, bad_steps=new.bad_steps,
                 lr=state_lib.learning_rate(c.optim, c.train.num_steps)(state.step))
  return new, metrics


def jit_train_step(exp, teacher_velocity=None):
  """(state, batch, teacher_params) -> (state, metrics), compiled once with the state's shardings;
  the state is donated."""
  step = functools.partial(train_step, exp, teacher_velocity=teacher_velocity)
  return jax.jit(step, donate_argnums=(0,),
                 out_shardings=(exp.state_shardings(), parallel.replicated(exp.mesh)))
