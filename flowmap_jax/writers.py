"""Where a run's metrics go: clu's default writer (the log and TensorBoard event files in the workdir)
and, with `train.wandb_project`, Weights & Biases too.

Only process 0 writes files or W&B; the other processes log. W&B is optional (`pip install -e
".[wandb]"`): a run that names a project without it installed is a config error before anything
trains. The W&B run's id is kept in `workdir/wandb_id`, so a resumed run (the same command again)
continues the same W&B run. W&B's own environment applies: WANDB_MODE=offline writes under
`workdir/wandb` without a network, WANDB_ENTITY picks the team.
"""
import os
import uuid

import jax
import numpy as np
from clu import metric_writers
from etils import epath

from flowmap_jax import config_io


def create(config, workdir):
  """The run's writer: log + TensorBoard (+ W&B when train.wandb_project is set) on process 0."""
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  project = config.train.get('wandb_project', '')
  if is_main and project:
    return metric_writers.MultiWriter([writer, WandbWriter(config, workdir, project)])
  return writer


def _run_id(workdir):
  path = epath.Path(workdir) / 'wandb_id'
  if path.exists():
    return path.read_text().strip()
  run_id = uuid.uuid4().hex[:12]
  path.write_text(run_id)
  return run_id


class WandbWriter(metric_writers.MetricWriter):
  """clu's MetricWriter interface over one W&B run (resumed by the id kept in the workdir)."""

  def __init__(self, config, workdir, project):
    import wandb  # pylint: disable=g-import-not-at-top
    self._wandb = wandb
    local = '://' not in str(workdir)
    self._run = wandb.init(
        project=project, id=_run_id(workdir), resume='allow',
        name=os.path.basename(os.path.normpath(str(workdir))),
        dir=str(workdir) if local else None,
        config=config_io.flatten(config_io.to_dict(config)))

  def write_summaries(self, step, values, metadata=None):
    del metadata
    self.write_scalars(step, {k: v for k, v in values.items() if np.ndim(v) == 0})

  def write_scalars(self, step, scalars):
    self._run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

  def write_images(self, step, images):
    # clu's images are (N, H, W, C) batches; W&B logs one image per key, so the first of each.
    self._run.log({k: self._wandb.Image(np.asarray(v)[0]) for k, v in images.items()},
                  step=int(step))

  def write_videos(self, step, videos):
    # clu: (N, T, H, W, C); W&B wants (T, C, H, W).
    self._run.log({k: self._wandb.Video(np.moveaxis(np.asarray(v)[0], -1, 1))
                   for k, v in videos.items()}, step=int(step))

  def write_audios(self, step, audios, *, sample_rate):
    self._run.log({k: self._wandb.Audio(np.asarray(v)[0], sample_rate=sample_rate)
                   for k, v in audios.items()}, step=int(step))

  def write_texts(self, step, texts):
    self._run.log({k: self._wandb.Html(f'<pre>{v}</pre>') for k, v in texts.items()},
                  step=int(step))

  def write_histograms(self, step, arrays, num_buckets=None):
    buckets = {} if num_buckets is None else num_buckets
    self._run.log({k: self._wandb.Histogram(np.asarray(v), num_bins=buckets.get(k, 64))
                   for k, v in arrays.items()}, step=int(step))

  def write_hparams(self, hparams):
    self._run.config.update(dict(hparams), allow_val_change=True)

  def flush(self):
    pass   # wandb sends in its own process

  def close(self):
    self._run.finish()
