"""The training loop: resume, the teacher, metric writers, progress, checkpoints, preemption.

`train_and_evaluate(config, workdir)` is the programmatic entry point `main` calls. A run started again
with the same workdir resumes from its latest checkpoint; the data of step k are drawn from
fold_in(base key, k), so a resumed run is the same run.
"""
import signal
import time

import jax
from absl import logging
from etils import epath

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import evaluate
from flowmap_jax import parallel
from flowmap_jax import progress
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax import validate
from flowmap_jax import writers
from flowmap_jax.data import images
from flowmap_jax.data import latents


class NonFiniteError(RuntimeError):
  pass


class Preempted(RuntimeError):
  pass


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
  for warning in validate.warnings_of(config):
    logging.warning(warning)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  validate.check_workdir_config(config, workdir)

  teacher = None
  if validate.loads_teacher(config):
    teacher = teacher_lib.load(config, workdir, train_fn=train_and_evaluate)
  exp = state_lib.Experiment(config)
  # The step sees the teacher only when the loss distils it (init_from_teacher alone needs none).
  distils = teacher is not None and exp.loss.needs_teacher
  teacher_params = teacher.params if distils else None
  teacher_velocity = (teacher_lib.velocity_fn(teacher.exp, config.teacher.guidance)
                      if distils else None)

  # Image runs read their data through grain; the iterator's position is part of every checkpoint.
  data_iter = ((latents if exp.is_latent else images).train_iterator(
      config, jax.process_index(), jax.process_count()) if exp.is_image else None)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints, config.train.checkpoint_every)
  state = checkpoint.restore_latest(mngr, exp.abstract_state(), data_iter)
  if state is None:
    init = teacher.params if (config.train.init_from_teacher and teacher is not None) else None
    if init is not None:
      teacher_lib.check_init_shapes(exp, teacher)
    state = exp.init_state(init)
    start = 0
  else:
    start = int(jax.device_get(state.step))
    logging.info('Resuming %s from step %d.', workdir, start)

  writer = writers.create(config, workdir)
  if start == 0:
    writer.write_hparams({k: v for k, v in config_io.flatten(config_io.to_dict(config)).items()
                          if isinstance(v, (int, float, str, bool))})
  num_steps = config.train.num_steps
  report = progress.TrainingRate(num_steps, writer, every_steps=config.train.log_every)
  step_fn = step_lib.jit_train_step(exp, teacher_velocity)
  batch = {}
  t0 = time.time()
  try:
    with _SigtermFlag() as sigterm:
      step = start
      while step < num_steps:
        if data_iter is not None:
          batch = parallel.global_batch(next(data_iter), exp.mesh)
        state, metrics = step_fn(state, batch, teacher_params)
        step += 1
        report(step)
        if step % config.train.log_every == 0 or step == num_steps:
          _check_finite(state, config, mngr)
          writer.write_scalars(step, {k: float(v) for k, v in jax.device_get(metrics).items()})
        if config.train.plot_every and step % config.train.plot_every == 0:
          evaluate.write_sample_plots(exp, state, writer, step, workdir=workdir)
        # One process: our SIGTERM flag. Several: JAX's preemption sync point, so that every
        # host saves at the same step (a local flag would leave the others waiting in the save).
        preempted = (sigterm.raised if jax.process_count() == 1
                     else mngr.reached_preemption(step))
        if mngr.should_save(step) or step == num_steps or preempted:
          _check_finite(state, config, mngr)  # never checkpoint a state after a bad step
          checkpoint.save(mngr, state, data_iter)
        if preempted:
          raise Preempted(f'Preempted (SIGTERM) at step {step}: checkpoint saved in '
                          f'{mngr.directory}; run the same command again to resume.')
    mngr.wait_until_finished()
    if step > start:
      logging.info('Trained steps %d..%d in %.1fs.', start, step, time.time() - t0)
    return evaluate.evaluate(exp, state, workdir, writer=writer, teacher=teacher)
  finally:
    # Also on errors: pending saves finish and Orbax's threads stop before the process exits.
    mngr.wait_until_finished()
    mngr.close()
    writer.flush()
    writer.close()
