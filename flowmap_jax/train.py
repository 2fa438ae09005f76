"""Training: the TrainState, the pure jitted train_step, and the loop around it.

`train_and_evaluate(config, workdir)` is the programmatic entry point `main` calls. A run started again
with the same workdir resumes from its latest checkpoint; the data of step k are drawn from
fold_in(base key, k), so a resumed run is the same run.
"""
import functools
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from clu import periodic_actions
from etils import epath

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import evaluate
from flowmap_jax import losses
from flowmap_jax import models
from flowmap_jax import parallel
from flowmap_jax import validate
from flowmap_jax.data import images
from flowmap_jax.data import toy
from flowmap_jax.losses import common


@flax.struct.dataclass
class TrainState:
  step: jax.Array        # int32: steps taken (accepted or skipped)
  params: Any            # θ
  opt_state: Any
  target_ema: Any        # θ⁻, the loss's target EMA at loss.itvm.ema_rate ({} when unused)
  eval_emas: Any         # {str(rate): params} for sampling and evaluation
  rng: jax.Array         # base key data (uint32); step keys are fold_in(rng, step)
  bad_steps: jax.Array   # int32: non-finite steps skipped so far
  last_bad_step: jax.Array  # int32: the latest non-finite step (-1: none)
  last_bad_metrics: Any  # {name: scalar}: loss and aux terms at that step


class NonFiniteError(RuntimeError):
  pass


class Preempted(RuntimeError):
  pass


# --------------------------------------------------------------------------- the pieces of a run


def uses_target_ema(loss_config):
  return loss_config.name == 'itvm' or (loss_config.name == 'lsd' and loss_config.lsd.teacher == 'ema')


def learning_rate(optim, num_steps):
  lr, warm = optim.lr, optim.warmup_steps
  if optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(num_steps - warm, 1))
  elif optim.schedule == 'sqrt':
    # The papers' decay: lr / sqrt(max(step / sqrt_steps, 1)).
    main = lambda step: lr / jnp.sqrt(jnp.maximum(step / optim.sqrt_steps, 1.0))
  else:
    raise ValueError(f'Unknown optim.schedule {optim.schedule!r}.')
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
    raise ValueError(f'Unknown optim.name {optim.name!r}.')
  return optax.chain(optax.clip_by_global_norm(optim.clip), opt) if optim.clip else opt


class Experiment:
  """Everything a run derives from its config: model, σ0, optimiser, the jitted step.

  `teacher_exp` is the Experiment of the teacher whose velocity a distillation loss uses (its network
  may differ from the student's); None means the student's own network.
  """

  def __init__(self, config, mesh=None, teacher_exp=None):
    self.config = config
    self.is_image = images.is_image(config.data)
    self.sigma0 = float(config.data.sigma0) if self.is_image else toy.sigma0(config.data)
    self.num_classes = images.num_classes(config.data) if self.is_image else 0
    self.model = models.get(config.model, sigma=self.sigma0, num_classes=self.num_classes)
    self.tx = optimizer(config.optim, config.train.num_steps)
    self.mesh = parallel.make_mesh(config.mesh) if mesh is None else mesh
    self.loss_fn = losses.get(config.loss.name)
    self.data_shape = images.image_shape(config.data) if self.is_image else (2,)
    self.teacher_exp = teacher_exp

  def apply_fn(self, params, s, t, x, y=None):
    """v_θ(s, t, x | y) for sampling and targets outside training: no dropout."""
    return self.model.apply({'params': params}, s, t, x, y)

  def train_apply_fn(self, dropout_key):
    """v_θ with dropout on (when the model has any). Every call in one step uses the same key, so
    calls of equal shape share a mask: a self-distillation target sees the sub-network that
    the prediction does."""
    if not self.config.model.get('dropout', 0.0):
      return self.apply_fn
    return lambda params, s, t, x, y=None: self.model.apply(
        {'params': params}, s, t, x, y, train=True, rngs={'dropout': dropout_key})

  def velocity(self, params, guidance=1.0):
    """The diagonal (t, x, y) -> v_θ(t, t, x | y) as a velocity field (a teacher, an ODE sampler).

    With labels and guidance w ≠ 1, classifier-free guidance v_u + w (v_c − v_u), v_u taking the
    dropped label: one network call on the doubled batch.
    """
    def v(t, x, y=None):
      if y is None or guidance == 1.0:
        return self.apply_fn(params, t, t, x, y)
      null = jnp.full_like(y, self.num_classes)
      v_c, v_u = common.apply_many(lambda *a: self.apply_fn(params, *a),
                                   [(t, t, x, y), (t, t, x, null)])
      return v_u + guidance * (v_c - v_u)
    return v

  def example_labels(self, n):
    """Labels for shape-only calls (init, eval_shape): zeros, or None when unconditional."""
    return jnp.zeros((n,), jnp.int32) if self.num_classes else None

  def init_params(self, rng):
    z = jnp.zeros((1,))
    return self.model.init(rng, z, z, jnp.zeros((1,) + self.data_shape),
                           self.example_labels(1))['params']

  def _state_from_params(self, params, rng):
    c = self.config
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
        target_ema=params if uses_target_ema(c.loss) else {},
        eval_emas={str(r): params for r in c.train.eval_ema_rates},
        rng=jax.random.key_data(rng), bad_steps=jnp.zeros((), jnp.int32),
        last_bad_step=-jnp.ones((), jnp.int32),
        last_bad_metrics={k: jnp.zeros((), jnp.float32) for k in self.loss_metric_names})

  @functools.cached_property
  def loss_metric_names(self):
    """'loss' and the loss's aux keys (shapes only: nothing runs)."""
    x = jnp.zeros((8,) + self.data_shape)
    params = jax.eval_shape(self.init_params, jax.random.key(0))
    teacher = lambda t, x_, y=None: x_
    _, aux = jax.eval_shape(lambda p: self.loss_fn(
        self.apply_fn, p, x, x, jax.random.key(0), config=self.config.loss, teacher=teacher,
        y=self.example_labels(8)), params)
    return ('loss',) + tuple(sorted(aux))

  def init_state(self, init_params=None):
    """The initial state, built directly with its shardings (jit with out_shardings)."""
    key = jax.random.key(self.config.seed)
    init_key, base_key = jax.random.split(key)
    make = lambda p: self._state_from_params(self.init_params(init_key) if p is None else p,
                                             base_key)
    shardings = self.state_shardings()
    return jax.jit(make, out_shardings=shardings)(init_params)

  def abstract_state(self):
    shapes = jax.eval_shape(lambda: self._state_from_params(
        self.init_params(jax.random.key(0)), jax.random.key(0)))
    shardings = self.state_shardings()
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)

  def state_shardings(self):
    """Parameter-shaped leaves (params, optimiser moments, EMAs) by the FSDP rule; the rest
    (step, key, counters) replicated."""
    shapes = jax.eval_shape(lambda: self._state_from_params(
        self.init_params(jax.random.key(0)), jax.random.key(0)))
    return parallel.tree_shardings(self.mesh, shapes, self.config.mesh.fsdp_min_size)

  # ------------------------------------------------------------------------- the pure step

  def loss_of_params(self, state, batch, teacher_params):
    """The step's loss as a function of the online parameters only, params ↦ (loss, aux): this
    step's data, noise, labels, dropout, teacher and EMA fixed (train_step differentiates it;
    benchmarks/step_cost.py reads its saved residuals)."""
    c = self.config
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_data, k_noise, k_loss = jax.random.split(key, 3)
    k_dropout, k_label = jax.random.fold_in(k_loss, 1), jax.random.fold_in(k_loss, 2)
    y = None
    if 'image' in batch:
      x1 = images.to_unit_range(batch['image'])
      if self.num_classes:
        y = batch['label'].astype(jnp.int32)
        if c.loss.label_dropout:  # classifier-free guidance: some labels become the null class
          drop = jax.random.bernoulli(k_label, c.loss.label_dropout, y.shape)
          y = jnp.where(drop, self.num_classes, y)
    elif 'x1' in batch:
      x1 = batch['x1']
    else:
      x1 = toy.sample(c.data.name, k_data, c.data.batch_size)
      x1 = jax.lax.with_sharding_constraint(x1, parallel.batch_sharding(self.mesh))
    if c.train.poison_steps:  # test hook for the non-finite guard
      poisoned = jnp.isin(state.step, jnp.asarray(c.train.poison_steps))
      x1 = jnp.where(poisoned, jnp.nan, x1)
    x0 = jnp.asarray(self.sigma0, x1.dtype) * jax.random.normal(k_noise, x1.shape, x1.dtype)
    texp = self.teacher_exp or self
    teacher = (None if teacher_params is None
               else texp.velocity(teacher_params, c.teacher.guidance))
    ema = state.target_ema if uses_target_ema(c.loss) else None
    apply_fn = self.train_apply_fn(k_dropout)

    def loss_of(params):
      return self.loss_fn(apply_fn, params, x0, x1, k_loss, config=c.loss, ema_params=ema,
                          teacher=teacher, y=y)

    return loss_of

  def train_step(self, state, batch, teacher_params):
    """One optimiser step: loss and gradient, update, EMAs; non-finite steps are skipped on device.

    `batch` is {} for generated 2-D data (drawn here from the step key), {'image': uint8,
    'label': int32} from the image pipeline, or {'x1': float} (tests).
    Returns (new state, metrics of this step).
    """
    c = self.config
    loss_of = self.loss_of_params(state, batch, teacher_params)
    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)

    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # After more than max_bad_steps non-finite steps the state freezes: the host stops the run at
    # its next check without a device sync on every step, and nothing bad was ever applied.
    halted = state.bad_steps > c.train.max_bad_steps
    accept = finite & ~halted
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
    ema_update = lambda rate, e: jax.tree.map(lambda a, b: rate * a + (1 - rate) * b, e, params)
    new = state.replace(
        step=state.step + jnp.where(halted, 0, 1).astype(jnp.int32),
        params=pick(params, state.params),
        opt_state=pick(opt_state, state.opt_state),
        target_ema=(pick(ema_update(c.loss.itvm.ema_rate, state.target_ema), state.target_ema)
                    if uses_target_ema(c.loss) else state.target_ema),
        eval_emas={k: pick(ema_update(float(k), e), e) for k, e in state.eval_emas.items()},
        bad_steps=state.bad_steps + jnp.where(finite | halted, 0, 1).astype(jnp.int32),
        last_bad_step=jnp.where(finite | halted, state.last_bad_step, state.step),
        last_bad_metrics={k: jnp.where(finite | halted, v, dict(aux, loss=loss)[k].astype(v.dtype))
                          for k, v in state.last_bad_metrics.items()})
    metrics = dict(aux, loss=loss, grad_norm=grad_norm, bad_steps=new.bad_steps,
                   lr=learning_rate(c.optim, c.train.num_steps)(state.step))
    return new, metrics

  @functools.cached_property
  def jit_train_step(self):
    shardings = self.state_shardings()
    rep = parallel.replicated(self.mesh)
    return jax.jit(self.train_step, donate_argnums=(0,), out_shardings=(shardings, rep))


# --------------------------------------------------------------------------- teachers


def needs_teacher(config):
  """The teacher is loaded for losses that distil it and for runs that start from its weights."""
  return config.loss.name in losses.NEEDS_TEACHER or config.train.init_from_teacher


def teacher_paths(config, workdir):
  tworkdir = config.teacher.workdir or str(epath.Path(workdir) / 'teacher')
  return config.teacher.config, tworkdir


def load_teacher(config, workdir, require_existing=None):
  """(teacher Experiment, its slowest eval-EMA params, teacher workdir), training it if missing
  unless teacher.require_existing (or `require_existing`)."""
  tspec, tworkdir = teacher_paths(config, workdir)
  tconfig = config_io.load(tspec)
  if not checkpoint.has_checkpoint(tworkdir):
    if config.teacher.require_existing or require_existing:
      raise validate.ConfigError([
          f'teacher.require_existing=True but no teacher checkpoint exists at '
          f'{epath.Path(tworkdir).absolute() / "checkpoints"}: train it with '
          f'`python -m flowmap_jax.main --config {tspec} --workdir {tworkdir}`, or set '
          f'teacher.workdir to where it is.'])
    logging.info('No teacher checkpoint in %s: training the teacher (%s) first.', tworkdir, tspec)
    train_and_evaluate(tconfig, tworkdir)
  texp = Experiment(tconfig)
  mngr = checkpoint.manager(tworkdir)
  errors = []
  restored = checkpoint.restore_fields(mngr, {'eval_emas': texp.abstract_state().eval_emas}, errors)
  mngr.close()
  if restored is None:
    raise validate.ConfigError([
        f'The teacher checkpoint in {epath.Path(tworkdir).absolute()}/checkpoints does not match the '
        f'teacher config {tspec} (model {tconfig.model.name}, width {tconfig.model.get("width")}, '
        f'depth {tconfig.model.get("depth")}): '
        + '; '.join(f'step {s}: {m}' for s, m in errors)
        + '. Point teacher.config at the config the teacher was trained with, or teacher.workdir '
        'at a teacher trained with this one.'])
  return texp, slowest_ema(restored['eval_emas']), tworkdir


def slowest_ema(state_or_emas):
  """The evaluation EMA with the highest rate (of a TrainState or its eval_emas dict)."""
  emas = getattr(state_or_emas, 'eval_emas', state_or_emas)
  return emas[max(emas, key=float)]


# --------------------------------------------------------------------------- the loop


class _SigtermFlag:
  """Turns SIGTERM into a flag the loop checks between steps (then it saves and stops)."""

  def __init__(self):
    self.raised = False
    self._old = None

  def __enter__(self):
    if jax.process_count() > 1:  # JAX's own preemption notifier owns SIGTERM there
      return self
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _check_finite(state, config, mngr):
  bad = int(jax.device_get(state.bad_steps))
  if bad > config.train.max_bad_steps:
    step = int(jax.device_get(state.last_bad_step))
    terms = ', '.join(f'{k}={float(v):.6g}' for k, v in
                      jax.device_get(state.last_bad_metrics).items())
    last = mngr.latest_step()
    raise NonFiniteError(
        f'Non-finite loss or gradient at step {step} ({terms}); {bad} non-finite step(s) in '
        f'all, train.max_bad_steps={config.train.max_bad_steps}. Neither step {step} nor any later '
        f'step was applied, and no checkpoint was written after it; the last good checkpoint is '
        f'{"step " + str(last) if last is not None else "none"} in {mngr.directory}. '
        'Lower optim.lr, check the data, or raise train.max_bad_steps to skip such steps.')
  return bad


def train_and_evaluate(config, workdir):
  """Trains (resuming from `workdir` if it holds a run), then evaluates; returns the eval dict."""
  validate.validate(config)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  validate.check_workdir_config(config, workdir)

  teacher_exp = teacher_params = teacher_workdir = None
  if needs_teacher(config):
    teacher_exp, teacher_params, teacher_workdir = load_teacher(config, workdir)
  # The step sees the teacher only when the loss distils it (init_from_teacher alone needs none).
  step_teacher = teacher_params if config.loss.name in losses.NEEDS_TEACHER else None

  exp = Experiment(config, teacher_exp=teacher_exp)
  # Image runs read their data through grain; the iterator's position is part of every checkpoint.
  data_iter = (images.train_iterator(config, jax.process_index(), jax.process_count())
               if exp.is_image else None)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(mngr, exp.abstract_state(), data_iter)
  if state is None:
    init = teacher_params if (config.train.init_from_teacher and teacher_params is not None) else None
    if init is not None:
      validate.check_teacher_shapes(exp, init, config)
    state = exp.init_state(init)
    start = 0
  else:
    start = int(jax.device_get(state.step))
    logging.info('Resuming %s from step %d.', workdir, start)

  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  if start == 0:
    writer.write_hparams({k: v for k, v in config_io.flatten(config_io.to_dict(config)).items()
                          if isinstance(v, (int, float, str, bool))})
  num_steps = config.train.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=config.train.log_every)
  step_fn = exp.jit_train_step
  batch = {}
  t0 = time.time()
  try:
    with _SigtermFlag() as sigterm:
      step = start
      while step < num_steps:
        if data_iter is not None:
          batch = parallel.global_batch(next(data_iter), exp.mesh)
        state, metrics = step_fn(state, batch, step_teacher)
        step += 1
        report(step)
        if step % config.train.log_every == 0 or step == num_steps:
          _check_finite(state, config, mngr)
          writer.write_scalars(step, {k: float(v) for k, v in jax.device_get(metrics).items()})
        if config.train.plot_every and step % config.train.plot_every == 0:
          evaluate.write_sample_plots(exp, state, writer, step, workdir=workdir)
        if step % config.train.checkpoint_every == 0 or step == num_steps:
          _check_finite(state, config, mngr)  # never checkpoint a state after a bad step
          checkpoint.save(mngr, state, data_iter)
        # One process: our SIGTERM flag. Several: JAX's preemption sync point, so that every
        # host saves at the same step (a local flag would leave the others waiting in the save).
        preempted = (sigterm.raised if jax.process_count() == 1
                     else mngr.reached_preemption(step))
        if preempted:
          _check_finite(state, config, mngr)
          checkpoint.save(mngr, state, data_iter)
          raise Preempted(f'Preempted (SIGTERM) at step {step}: checkpoint saved in '
                          f'{mngr.directory}; run the same command again to resume.')
    mngr.wait_until_finished()
    if step > start:
      logging.info('Trained steps %d..%d in %.1fs.', start, step, time.time() - t0)
    return evaluate.evaluate(exp, state, workdir, writer=writer, teacher_exp=teacher_exp,
                             teacher_params=teacher_params, teacher_workdir=teacher_workdir)
  finally:
    # Also on errors: pending saves finish and Orbax's threads stop before the process exits.
    mngr.wait_until_finished()
    mngr.close()
    writer.flush()
    writer.close()


def _restore_finished(config, workdir, mode):
  """(Experiment, latest state) of a workdir, for --mode eval and sample."""
  exp = Experiment(config)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(mngr, exp.abstract_state())
  mngr.close()
  if state is None:
    raise validate.ConfigError([f'--mode {mode}: no checkpoint in {workdir}/checkpoints.'])
  return exp, state


def evaluate_workdir(config, workdir):
  """--mode eval: restore the latest checkpoint of `workdir` and rewrite eval.json / eval.md."""
  validate.validate(config)
  teacher_exp = teacher_params = teacher_workdir = None
  if needs_teacher(config):
    teacher_exp, teacher_params, teacher_workdir = load_teacher(config, workdir,
                                                                require_existing=True)
  exp, state = _restore_finished(config, workdir, 'eval')
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  results = evaluate.evaluate(exp, state, workdir, writer=writer, teacher_exp=teacher_exp,
                              teacher_params=teacher_params, teacher_workdir=teacher_workdir)
  writer.flush()
  return results


def sample_workdir(config, workdir, num_samples=20_000):
  """--mode sample: flow-map samples of the latest checkpoint at each eval step count, written to
  workdir/samples.npz and workdir/plots/samples_<step>.png (images: grid_size² uint8 images per
  step count, one grid row per step count)."""
  from flowmap_jax.evaluation import plots  # pylint: disable=g-import-not-at-top
  validate.validate(config)
  exp, state = _restore_finished(config, workdir, 'sample')
  params, rng = jax.device_get(slowest_ema(state)), jax.random.key(config.seed + 30_000)
  if exp.is_image:
    n = int(config.eval.grid_size) ** 2
    samples = {f'{k} steps': images.quantize(evaluate.sampler(exp, 'flow_map', k)(params, rng, n))
               for k in config.eval.steps}
    grid = {k: v[:config.eval.grid_size] for k, v in samples.items()}
  else:
    grid = None
    samples = {f'{n} steps': evaluate.flow_map_samples(exp, params, rng, num_samples, n,
                                                       num_samples) for n in config.eval.steps}
  step = int(jax.device_get(state.step))
  if jax.process_index() == 0:
    with epath.Path(workdir, 'samples.npz').open('wb') as f:
      np.savez(f, **{k.split()[0]: v for k, v in samples.items()})
    image = (plots.image_grid(grid) if grid is not None
             else plots.density_panel(samples, title=f'step {step}'))
    plots.save_png(image, epath.Path(workdir, 'plots', f'samples_{step}.png'))
  return samples


def fid_stats_workdir(config, workdir):
  """--mode fid_stats: Inception statistics (μ, Σ) of the data set's reference split, written to
  eval.fid_stats (or <workdir>/fid_stats_<data>_<size>.npz). Every process reads its shard; the
  first and second moments are summed over processes in float64."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from flowmap_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  validate.validate(config)
  if not images.is_image(config.data):
    raise validate.ConfigError([f'--mode fid_stats needs an image data set, not {config.data.name!r}.'])
  try:
    features = fid.feature_fn(fid.load_params(config.eval.fid_weights))
  except fid.WeightsMissing as e:
    raise validate.ConfigError([str(e)]) from None
  split = images.DATASETS[config.data.name].eval_split
  ds = images.dataset(config.data, seed=0, batch_size=int(config.eval.batch_size),
                      process_index=jax.process_index(), process_count=jax.process_count(),
                      split=split, shuffle=False, repeat=False, random_flip=False)
  n, s1, s2 = 0, np.zeros(fid.FEATURES), np.zeros((fid.FEATURES, fid.FEATURES))
  for batch in ds:
    f = np.asarray(features(batch['image']), np.float64)
    n, s1, s2 = n + len(f), s1 + f.sum(0), s2 + f.T @ f
  if jax.process_count() > 1:
    n, s1, s2 = (np.asarray(multihost_utils.process_allgather(a)).sum(0) for a in
                 (np.asarray(n, np.float64), s1, s2))
  n = int(n)
  mu = s1 / n
  sigma = (s2 - n * np.outer(mu, mu)) / (n - 1)
  path = config.eval.fid_stats or str(
      epath.Path(workdir) / f'fid_stats_{config.data.name.replace("/", "_")}_'
      f'{config.data.image_size}.npz')
  if jax.process_index() == 0:
    fid.save_stats(path, mu, sigma, n, f'{config.data.name} {split} at {config.data.image_size}px')
  logging.info('FID reference statistics of %d images of %s (%s) written to %s; use '
               '--config.eval.fid_stats=%s.', n, config.data.name, split, path, path)
  return path
