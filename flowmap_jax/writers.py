"""Where a run's metrics go: the log, TensorBoard event files in the workdir and, with
`train.wandb_project`, Weights & Biases too.

The TensorBoard writer writes the event files itself (tensorboard's protocol buffers and record
format, the records `tf.summary` writes: scalars and images as tensors with their plugin's metadata,
the hparams plugin's summary), so a run never imports TensorFlow: that import costs 7 to 20 s in every
process on a small machine, and the event files were its only use. `tensorboard --logdir WORKDIR`
reads them as before.

Only process 0 writes files or W&B; the other processes log. W&B is optional (`pip install -e
".[wandb]"`): a run that names a project without it installed is a config error before anything
trains. The W&B run's id is kept in `workdir/wandb_id`, so a resumed run (the same command again)
continues the same W&B run. W&B's own environment applies: WANDB_MODE=offline writes under
`workdir/wandb` without a network, WANDB_ENTITY picks the team.
"""
import io
import itertools
import os
import socket
import time
import uuid

import jax
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax import config_io


def create(config, workdir):
  """The run's writer: log + TensorBoard (+ W&B when train.wandb_project is set) on process 0."""
  if jax.process_index() != 0:
    return LoggingWriter()
  writers = [LoggingWriter(), TensorBoardWriter(workdir)]
  project = config.train.get('wandb_project', '')
  if project:
    writers.append(WandbWriter(config, workdir, project))
  return MultiWriter(writers)


class MetricWriter:
  """What the training loop and the evaluations call: scalars and images at a step, the run's
  hyperparameters once, flush and close (the interface of clu's MetricWriter that we use)."""

  def write_scalars(self, step, scalars):
    raise NotImplementedError

  def write_images(self, step, images):
    """images: {tag: (N, H, W, C) uint8 or float in [0, 1]}."""
    raise NotImplementedError

  def write_hparams(self, hparams):
    raise NotImplementedError

  def flush(self):
    pass

  def close(self):
    self.flush()


class MultiWriter(MetricWriter):
  """Every call to each writer, in order."""

  def __init__(self, writers):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    for w in self._writers:
      w.write_images(step, images)

  def write_hparams(self, hparams):
    for w in self._writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()


class LoggingWriter(MetricWriter):
  """INFO log lines, `[step] key=value, ...` (clu's LoggingWriter's format, which tools grep)."""

  def write_scalars(self, step, scalars):
    values = [f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
              for k, v in sorted(scalars.items())]
    logging.info('[%d] %s', step, ', '.join(values))

  def write_images(self, step, images):
    logging.info('[%d] Got images: %s.', step, {k: np.shape(v) for k, v in images.items()})

  def write_hparams(self, hparams):
    logging.info('[Hyperparameters] %s', dict(hparams))


class TensorBoardWriter(MetricWriter):
  """One TensorBoard event file in `logdir`, written without TensorFlow (module docstring)."""

  _count = itertools.count()

  def __init__(self, logdir):
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
    self._event_pb2 = event_pb2
    logdir = epath.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    # tf.summary's file name, so that two writers (a resumed run, two processes) never collide.
    name = (f'events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.'
            f'{next(self._count)}.v2')
    self._file = (logdir / name).open('wb')
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))
    self.flush()

  def _write(self, event):
    self._records.write(event.SerializeToString())

  def _summary(self, step, values):
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step, scalars):
    # tf.summary.scalar's record: a float32 scalar tensor under the scalars plugin.
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.scalar import metadata  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
    meta = metadata.create_summary_metadata(display_name=None, description=None)
    self._summary(step, [summary_pb2.Summary.Value(
        tag=k, metadata=meta, tensor=tensor_util.make_tensor_proto(np.float32(v)))
        for k, v in scalars.items()])

  def write_images(self, step, images):
    # tf.summary.image's record: a string tensor [width, height, png, png, ...] under the images
    # plugin; floats become uint8 as tf.image.convert_image_dtype(saturate=True) does it.
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from tensorboard.compat.proto import summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.image import metadata  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch)
      if batch.ndim == 3:
        batch = batch[None]
      if batch.dtype != np.uint8:
        batch = np.clip(batch.astype(np.float32) * 255.5, 0, 255).astype(np.uint8)
      if batch.shape[-1] == 1:
        batch = batch[..., 0]
      pngs = []
      for image in batch:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format='PNG')
        pngs.append(buf.getvalue())
      height, width = batch.shape[1:3]
      tensor = tensor_util.make_tensor_proto(
          np.array([str(width).encode(), str(height).encode()] + pngs, dtype=object))
      meta = metadata.create_summary_metadata(display_name=None, description=None)
      values.append(summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor))
    self._summary(step, values)

  def write_hparams(self, hparams):
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=g-import-not-at-top
    summary = summary_v2.hparams_pb(dict(hparams))
    self._write(self._event_pb2.Event(wall_time=time.time(), step=0, summary=summary))

  def flush(self):
    self._records.flush()

  def close(self):
    if not self._file.closed:
      self._records.close()


def _run_id(workdir):
  path = epath.Path(workdir) / 'wandb_id'
  if path.exists():
    return path.read_text().strip()
  run_id = uuid.uuid4().hex[:12]
  path.write_text(run_id)
  return run_id


class WandbWriter(MetricWriter):
  """The MetricWriter interface over one W&B run (resumed by the id kept in the workdir)."""

  def __init__(self, config, workdir, project):
    import wandb  # pylint: disable=g-import-not-at-top
    self._wandb = wandb
    local = '://' not in str(workdir)
    self._run = wandb.init(
        project=project, id=_run_id(workdir), resume='allow',
        name=os.path.basename(os.path.normpath(str(workdir))),
        dir=str(workdir) if local else None,
        config=config_io.flatten(config_io.to_dict(config)))

  def write_scalars(self, step, scalars):
    self._run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

  def write_images(self, step, images):
    # The images are (N, H, W, C) batches; W&B logs one image per key, so the first of each.
    self._run.log({k: self._wandb.Image(np.asarray(v)[0]) for k, v in images.items()},
                  step=int(step))

  def write_hparams(self, hparams):
    self._run.config.update(dict(hparams), allow_val_change=True)

  def flush(self):
    pass   # wandb sends in its own process

  def close(self):
    self._run.finish()
