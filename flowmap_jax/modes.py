"""The modes besides training: `--mode eval`, `sample`, `fid_stats` on a workdir, and
`prepare_latents`, which writes a latent config's data.path.

Each restores what it needs from a workdir (the latest checkpoint, the teacher as its own workdir
describes it) and runs the evaluation code of `evaluate.py` on it.
"""
import jax
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax import checkpoint
from flowmap_jax import evaluate
from flowmap_jax import progress
from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax import validate
from flowmap_jax import writers
from flowmap_jax.data import images
from flowmap_jax.data import latents
from flowmap_jax.evaluation import plots


def restore_finished(config, workdir, mode):
  """(Experiment, latest state) of a workdir."""
  exp = state_lib.Experiment(config)
  mngr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(mngr, exp.abstract_state())
  mngr.close()
  if state is None:
    raise validate.ConfigError([f'--mode {mode}: no checkpoint in {workdir}/checkpoints.'])
  return exp, state


def evaluate_workdir(config, workdir):
  """--mode eval: restore the latest checkpoint of `workdir` and rewrite eval.json / eval.md."""
  validate.validate(config)
  teacher = None
  if validate.loads_teacher(config):
    teacher = teacher_lib.load(config, workdir, require_existing=True)
  exp, state = restore_finished(config, workdir, 'eval')
  writer = writers.create(config, workdir)
  results = evaluate.evaluate(exp, state, workdir, writer=writer, teacher=teacher)
  writer.flush()
  return results


def sample_workdir(config, workdir, num_samples=20_000):
  """--mode sample: flow-map samples of the latest checkpoint at each eval step count, written to
  workdir/samples.npz and workdir/plots/samples_<step>.png (images: grid_size² uint8 images per
  step count, one grid row per step count)."""
  validate.validate(config)
  exp, state = restore_finished(config, workdir, 'sample')
  params = jax.device_get(state_lib.slowest_ema(state))
  rng = jax.random.key(config.seed + 30_000)
  if exp.is_image:
    n = int(config.eval.grid_size) ** 2
    samples = {f'{k} steps': images.quantize(exp.to_images(
        evaluate.sampler(exp, 'flow_map', k)(params, rng, n))) for k in config.eval.steps}
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
  if latents.is_latent(config.data):  # statistics of the images the latents are made of
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.data = latents.image_config(config.data)
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
  # This process's share of the split (ds[process_index::process_count]) in whole batches.
  share = len(range(jax.process_index(), len(images.source(config.data, split)),
                    jax.process_count()))
  for batch in progress.track(ds, desc=f'Inception features of {config.data.name} ({split})',
                              total=-(-share // int(config.eval.batch_size))):
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


def prepare_latents(config, workdir=None):
  """--mode prepare_latents: encode data.images with data.vae into data.path (data/latents.py);
  resumable. Returns the folder."""
  del workdir  # the latents go to data.path, which every run of these latents reads
  validate.validate(config)
  if not latents.is_latent(config.data):
    raise validate.ConfigError([f"--mode prepare_latents needs a latent config (data.name="
                                f"'latents'), not data.name={config.data.name!r}."])
  manifest = latents.prepare(config)
  logging.info('Latents of %d images (%s) in %s; %s.', manifest['num_images'],
               manifest['crop'], config.data.path,
               'complete' if manifest['complete'] else 'other processes still writing')
  return config.data.path

