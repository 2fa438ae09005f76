"""A workdir's evaluation on images: FID at each step count (when the Inception weights and
reference statistics are given; otherwise the report says why it is off), the digit metrics of MNIST
runs, and sample grids; eval.json / eval.md. Samples of a latent run are decoded by its VAE first
(Experiment.to_images), in batches split over the local devices, then quantised to uint8 exactly as
the reference images are.

The samplers, the teacher reference and the reuse of a teacher's own numbers are evaluate.py's.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax import evaluate as ev
from flowmap_jax import losses
from flowmap_jax import progress
from flowmap_jax import state as state_lib
from flowmap_jax.data import images
from flowmap_jax.evaluation import digits
from flowmap_jax.evaluation import fid as fid_lib
from flowmap_jax.evaluation import plots
from flowmap_jax.evaluation import report

def image_estimator(config):
  e = config.eval
  return {'fid_samples': int(e.fid_samples), 'fid_stats': str(e.fid_stats),
          'data': config.data.name, 'image_size': int(config.data.image_size),
          'seed': int(config.seed), 'ode': e.teacher_ode, 'ode_rtol': float(e.ode_rtol),
          'ode_atol': float(e.ode_atol),
          # the teacher's guidance: its own eval's (fm) or the one it is distilled at
          'guidance': float(config.teacher.guidance if losses.spec(config.loss.name).learns_flow_map
                            else e.guidance),
          'classifier': str(e.get('classifier', '')),
          'steps': [int(n) for n in e.steps]}


def image_grid(exp, params, steps, kind='flow_map', guidance=1.0):
  """uint8 mosaic: one row per step count, the same noise and labels in every row; a
  class-conditional model's columns go through the classes in order (0, 1, 2, ...)."""
  n = int(exp.config.eval.grid_size)
  key = jax.random.key(exp.config.seed + 20_000)
  labels = jnp.arange(n, dtype=jnp.int32) % exp.num_classes if exp.num_classes else None
  rows = {k: images.quantize(exp.to_images(ev.sampler(exp, kind, k, guidance)(params, key, n,
                                                                             labels)))
          for k in steps}
  return plots.image_grid(rows)


def sample_features(run, params, features, key, n, batch_size, labels_fn=None, desc='samples',
                    to_images=None):
  """features(uint8 samples) -> {name: (b, ...)} of n samples, batches split over the processes and
  gathered (the count is rounded up to whole batches on every process); with `labels_fn(key, b)` also
  'label', the classes the samples were asked for; `to_images` maps samples to images in [-1, 1]
  first (a latent run's decoder). Returns ({name: (n, ...)}, mean NFE or None)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  procs = jax.process_count()
  num_batches = -(-n // batch_size)
  num_batches = -(-num_batches // procs) * procs
  feats, nfes = [], []
  for b in progress.track(range(jax.process_index(), num_batches, procs), desc=desc):
    k = jax.random.fold_in(key, b)
    out = run(params, k, batch_size)
    if isinstance(out, tuple):
      out, nfe = out
      nfes.append(float(nfe))
    if to_images is not None:
      out = to_images(out)
    f = {name: np.asarray(v) for name, v in features(images.quantize(out)).items()}
    if labels_fn is not None:
      f['label'] = np.asarray(labels_fn(k, batch_size))
    feats.append(f)
  feats = {name: np.concatenate([f[name] for f in feats]) for name in feats[0]}
  if procs > 1:
    feats = {name: np.asarray(multihost_utils.process_allgather(v, tiled=True))
             for name, v in feats.items()}
  return {name: v[:n] for name, v in feats.items()}, (float(np.mean(nfes)) if nfes else None)


def _fid_tools(config):
  """(features fn, reference (μ, Σ)) or the reason FID is off."""
  try:
    inception = fid_lib.feature_fn(fid_lib.load_params(config.eval.fid_weights))
    return (inception, fid_lib.load_stats(config.eval.fid_stats)), None
  except fid_lib.WeightsMissing as e:
    logging.warning('%s Training and sample grids are unaffected.', e)
    return None, str(e)


def _classifier(config):
  """The digit classifier of eval.classifier (None when unset); ClassifierMissing when named but
  not there."""
  path = config.eval.get('classifier', '')
  return digits.load(path) if path else None


def evaluate(exp, state, workdir, *, writer=None, teacher=None):
  """FID at every eval step count (flow map; teacher Euler and ODE for fm and distillation runs),
  sample grids at 1/2/4/8 steps; eval.json / eval.md."""
  config = exp.config
  e = config.eval
  step = int(jax.device_get(state.step))
  params = jax.device_get(state_lib.slowest_ema(state))
  n = int(e.fid_samples)
  results = {'step': step, 'loss': config.loss.name, 'estimator': image_estimator(config),
             'metric': fid_lib.label(n)}
  tools, results['fid_off'] = _fid_tools(config)
  classifier = _classifier(config)
  if classifier is not None:
    results['classifier'] = {'path': str(e.classifier), 'source': classifier.get('source', ''),
                             'test_accuracy': classifier.get('test_accuracy')}
    classify = digits.apply_fn(classifier)
  key = jax.random.key(config.seed + 10_000)

  def features(u8):
    out = {}
    if tools is not None:
      out['inception'] = tools[0](u8)
    if classifier is not None:
      out['logits'], out['digit_features'] = classify(u8)
      out['pixels'] = u8
    return out

  labels_fn = functools.partial(ev.sample_labels, exp) if exp.num_classes else None

  def score(run, p, desc):
    feats, nfe = sample_features(run, p, features, key, n, int(e.batch_size), labels_fn,
                                 desc=f'{desc}: {n} samples for {results["metric"]}',
                                 to_images=exp.to_images)
    out = {}
    if tools is not None:
      out['fid'] = fid_lib.frechet_distance(*fid_lib.statistics(feats['inception']), *tools[1])
    if classifier is not None:
      out.update(digits.metrics(classifier, feats['logits'], feats['digit_features'],
                                feats['pixels'], feats.get('label')))
    return dict(out, nfe=nfe) if nfe is not None else out

  measured = tools is not None or classifier is not None
  if measured and exp.loss.learns_flow_map:
    results['flow_map'] = {str(k): score(ev.sampler(exp, 'flow_map', k), params,
                                         f'flow map, {k} steps') for k in e.steps}
  ref = ev.reference(exp, params, teacher)
  if measured and ref is not None:
    cached = (ev.cached_teacher(ref.workdir, config, image_estimator, ref.step) if ref.workdir
              else None)
    if cached is not None:
      results.update(cached)
    else:
      results['teacher_euler'] = {str(k): score(ev.sampler(ref.exp, 'euler', k, ref.guidance),
                                                ref.params, f'Euler, {k} steps') for k in e.steps}
      results['teacher_ode'] = score(ev.sampler(ref.exp, 'ode', guidance=ref.guidance), ref.params,
                                     'adaptive ODE')
      if ref.workdir:
        ev.keep_teacher_scores(ref.workdir, ref.step, config, results, image_estimator)

  if jax.process_index() == 0:
    grid_steps = (1, 2, 4, 8)
    grid = (image_grid(exp, params, grid_steps) if exp.loss.learns_flow_map
            else image_grid(exp, params, grid_steps, 'euler', e.guidance))
    plots.save_png(grid, epath.Path(workdir, 'plots', 'samples.png'))
    epath.Path(workdir, 'eval.json').write_text(json.dumps(results, indent=2))
    epath.Path(workdir, 'eval.md').write_text(report.image_markdown(results))
    if writer is not None:
      writer.write_images(step, {'eval/samples': grid[None]})
      writer.write_scalars(step, {f'eval/flow_map_{m}_{k}': x
                                  for k, v in results.get('flow_map', {}).items()
                                  for m, x in v.items() if m != 'nfe'})
  logging.info('Evaluation of %s:\n%s', workdir, report.image_markdown(results))
  return results
