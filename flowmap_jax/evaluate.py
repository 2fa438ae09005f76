"""A workdir's evaluation: samples -> metrics -> eval.json / eval.md, plots.

2-D data here: KL and energy distance, density plots. Images (and decoded latents) in
evaluate_images.py, which uses this module's samplers.

Every sampler starts from the same base noise. The flow map samples with the slowest evaluation EMA
(never the loss's target EMA). For distillation runs the teacher is evaluated too (Euler at the same
NFEs and an adaptive ODE); its numbers are taken from the teacher's own eval.json when that was
computed with the same estimator settings, so a teacher shared by several students is evaluated once.
"""
import functools
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax import sampling
from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax.data import toy
from flowmap_jax.evaluation import kl as kl_lib
from flowmap_jax.evaluation import plots
from flowmap_jax.evaluation import report


def _estimator(config):
  e = config.eval
  return {'num_samples': int(e.num_samples), 'energy_samples': int(e.energy_samples),
          'data': config.data.name, 'seed': int(config.seed), 'ode': e.teacher_ode,
          'ode_rtol': float(e.ode_rtol), 'ode_atol': float(e.ode_atol),
          'steps': [int(n) for n in e.steps]}


def scores(data, samples, energy_n):
  """KL(data ‖ samples) and the energy distance on the first energy_n of each (docs/metrics.md)."""
  return {'kl': kl_lib.kl(data, samples),
          'energy': kl_lib.energy_distance(data[:energy_n], samples[:energy_n])}


def sample_labels(exp, key, n):
  """The uniform labels the samples of `key` are drawn for (None when unconditional)."""
  return (jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, exp.num_classes)
          if exp.num_classes else None)


def noise_and_labels(exp, key, n):
  """Base noise x0 ~ N(0, σ0² I) from `key` and, for a class-conditional model, uniform labels."""
  x0 = jnp.asarray(exp.sigma0, jnp.float32) * jax.random.normal(key, (n,) + exp.data_shape)
  return x0, sample_labels(exp, key, n)


@functools.lru_cache(maxsize=64)
def _compiled_sampler(exp, kind, guidance):
  """jit of (params, key, num_steps, n) -> samples (and NFE for the ODE). The parameters and the
  step count are arguments, so one compilation serves every checkpoint and step count (plots during
  training included)."""
  e = exp.config.eval

  def run(params, key, num_steps, n, labels=None):
    x0, y = noise_and_labels(exp, key, n)
    y = y if labels is None or y is None else labels
    if kind == 'flow_map':
      apply = teacher_lib.guided_apply_fn(exp, guidance)
      return sampling.uniform_flow_map_sample(apply, params, x0, num_steps, y)
    v = teacher_lib.velocity_fn(exp, guidance)(params)
    if kind == 'euler':
      return sampling.euler(v, x0, num_steps, y)
    return sampling.adaptive(v, x0, e.teacher_ode, e.ode_rtol, e.ode_atol, y=y)
  return jax.jit(run, static_argnums=3)


def sampler(exp, kind, num_steps=None, guidance=1.0):
  """(params, key, n[, labels]) -> samples of `kind` ('flow_map' | 'euler' at num_steps, or 'ode',
  which returns (samples, NFE)), from the base noise of `key`; a class-conditional model samples the
  given labels, or uniformly drawn ones."""
  run = _compiled_sampler(exp, kind, float(guidance))
  return lambda params, key, n, labels=None: run(params, key, num_steps or 0, n, labels)


def _samples(exp, kind, params, rng, n, batch_size, num_steps=None):
  """n samples of `kind`, batch by batch (bounded memory)."""
  run = sampler(exp, kind, num_steps)
  desc = {'flow_map': f'flow map, {num_steps} steps', 'euler': f'Euler, {num_steps} steps',
          'ode': 'adaptive ODE'}[kind]
  return sampling.in_batches(lambda key, m: run(params, key, m), rng, n, batch_size,
                             desc=f'{desc}: {n} samples')


def flow_map_samples(exp, params, rng, n, num_steps, batch_size):
  return _samples(exp, 'flow_map', params, rng, n, batch_size, num_steps)


def euler_samples(exp, params, rng, n, num_steps, batch_size):
  """The velocity's Euler samples at num_steps, from the same noise flow_map_samples uses."""
  return _samples(exp, 'euler', params, rng, n, batch_size, num_steps)


def teacher_scores(texp, tparams, data, rng, config):
  """Teacher Euler at each step count and its adaptive ODE, scored against `data`."""
  e = config.eval
  out = {'teacher_euler': {}}
  panels = {}
  for n in e.steps:
    x = euler_samples(texp, tparams, rng, e.num_samples, n, e.batch_size)
    out['teacher_euler'][str(n)] = scores(data, x, e.energy_samples)
    panels[f'Euler {n}'] = x
  x, nfes = _samples(texp, 'ode', tparams, rng, e.num_samples, e.batch_size)
  out['teacher_ode'] = dict(scores(data, x, e.energy_samples), nfe=float(np.mean(nfes)))
  panels[f'{e.teacher_ode} ({out["teacher_ode"]["nfe"]:.0f} NFE)'] = x
  return out, panels


# In a teacher's workdir: its students' scores of it at settings its own eval.json does not have (a
# guidance w ≠ 1 above all), so the next student of that teacher reuses them instead of paying
# again for the teacher's Euler samples and its adaptive ODE, the costliest part of an evaluation.
KEPT_SCORES = 'teacher_scores.json'


def _scored(teacher_workdir):
  """[(path, scores)]: the teacher's own eval.json, then each entry of its KEPT_SCORES."""
  out = []
  own, kept = epath.Path(teacher_workdir) / 'eval.json', epath.Path(teacher_workdir) / KEPT_SCORES
  if own.exists():
    out.append((str(own), json.loads(own.read_text())))
  if kept.exists():
    out += [(str(kept), entry) for entry in json.loads(kept.read_text())]
  return out


def cached_teacher(teacher_workdir, config, estimator=_estimator, step=None):
  """The teacher's scores (and 'teacher_source', the file they came from) when they were computed
  the same way: the same estimator, at step counts that include this run's, and, given `step`,
  from the teacher checkpoint of that step. From its own eval.json or its KEPT_SCORES."""
  want = estimator(config)
  other = lambda e: {k: v for k, v in e.items() if k != 'steps'}
  for source, cached in _scored(teacher_workdir):
    have = cached.get('estimator', {})
    if (other(want) == other(have) and 'teacher_ode' in cached
        and set(want['steps']) <= set(have.get('steps', ()))
        and (step is None or cached.get('step') == step)):
      return {'teacher_euler': {str(n): cached['teacher_euler'][str(n)] for n in want['steps']},
              'teacher_ode': cached['teacher_ode'], 'teacher_source': source}
  return None


def keep_teacher_scores(teacher_workdir, step, config, results, estimator=_estimator):
  """Appends a student's scores of its teacher (checkpoint `step`) to the teacher's KEPT_SCORES."""
  if jax.process_index() != 0 or step is None:
    return
  path = epath.Path(teacher_workdir) / KEPT_SCORES
  kept = json.loads(path.read_text()) if path.exists() else []
  kept.append({'step': int(step), 'estimator': estimator(config),
               'teacher_euler': results['teacher_euler'], 'teacher_ode': results['teacher_ode']})
  path.write_text(json.dumps(kept, indent=2))


class Reference(NamedTuple):
  """The velocity field a run's evaluation integrates as an ODE (Euler at each NFE, adaptive)."""
  exp: object
  params: object
  guidance: float
  workdir: object    # where its own eval.json may already hold its scores (None: compute them)
  step: object = None   # its checkpoint's step (None: its own eval.json, whatever step)


def reference(exp, params, teacher):
  """A run whose loss learns only a velocity (fm) is its own reference, at eval.guidance; a flow-map
  run compares its teacher at teacher.guidance (when it has one and eval.compare_teacher)."""
  c = exp.config
  if not exp.loss.learns_flow_map:
    return Reference(exp, params, c.eval.guidance, None)
  if teacher is None or not c.eval.compare_teacher:
    return None
  return Reference(teacher.exp, jax.device_get(teacher.params), c.teacher.guidance, teacher.workdir,
                   teacher.step)


def draws(config):
  """(data, floor_data, noise_key): the evaluation's fixed draws for a 2-D config, the same for
  every run with the config's data set and seed, so runs (and benchmarks) score on equal terms."""
  e = config.eval
  k_data, k_floor, k_noise = jax.random.split(jax.random.key(config.seed + 10_000), 3)
  draw = jax.jit(lambda key, n: toy.sample(config.data.name, key, n), static_argnums=1)
  data = sampling.in_batches(draw, k_data, e.num_samples, e.batch_size)
  data2 = sampling.in_batches(draw, k_floor, e.num_samples, e.batch_size)
  return data, data2, k_noise


def evaluate(exp, state, workdir, *, writer=None, teacher=None):
  """Scores the slowest evaluation EMA of `state` (and the reference velocity) into
  workdir/eval.json, eval.md and plots/samples.png."""
  if exp.is_image:
    # Imported here: evaluate_images builds on this module's samplers.
    from flowmap_jax import evaluate_images  # pylint: disable=g-import-not-at-top
    return evaluate_images.evaluate(exp, state, workdir, writer=writer, teacher=teacher)
  config = exp.config
  e = config.eval
  data, data2, k_noise = draws(config)
  results = {'step': int(jax.device_get(state.step)), 'loss': config.loss.name,
             'estimator': _estimator(config), 'floor': scores(data, data2, e.energy_samples)}
  # Host copies: evaluation runs on each process's local devices, whatever the training mesh.
  params = jax.device_get(state_lib.slowest_ema(state))
  panels = {'data': data}

  if exp.loss.learns_flow_map:
    results['flow_map'] = {}
    for n in e.steps:
      x = flow_map_samples(exp, params, k_noise, e.num_samples, n, e.batch_size)
      results['flow_map'][str(n)] = scores(data, x, e.energy_samples)
      panels[f'flow map {n}'] = x

  ref = reference(exp, params, teacher)
  if ref is not None:
    cached = cached_teacher(ref.workdir, config, step=ref.step) if ref.workdir else None
    if cached is not None:
      results.update(cached)
    else:
      tscores, tpanels = teacher_scores(ref.exp, ref.params, data, k_noise, config)
      results.update(tscores)
      if ref.workdir:
        keep_teacher_scores(ref.workdir, ref.step, config, results)
      if ref.exp is exp:  # a velocity-only run shows its own ODE samples
        panels.update(tpanels)

  if jax.process_index() == 0:
    epath.Path(workdir, 'eval.json').write_text(json.dumps(results, indent=2))
    epath.Path(workdir, 'eval.md').write_text(report.markdown(results))
    image = plots.density_panel(panels, title=f'{config.loss.name}, step {results["step"]}')
    plots.save_png(image, epath.Path(workdir, 'plots', 'samples.png'))
    if writer is not None:
      writer.write_images(results['step'], {'eval/samples': image[None]})
      scalars = {f'eval/flow_map_kl_{n}': v['kl'] for n, v in results.get('flow_map', {}).items()}
      writer.write_scalars(results['step'], scalars)
  logging.info('Evaluation of %s:\n%s', workdir, report.markdown(results))
  return results


def write_sample_plots(exp, state, writer, step, n=20_000, workdir=None):
  """Sample plots (2-D) or grids (images) at 1/2/4/8 steps to TensorBoard during training
  (process 0); image grids also to workdir/plots/grid_<step>.png."""
  if jax.process_index() != 0:
    return
  params = jax.device_get(state_lib.slowest_ema(state))
  if exp.is_image:
    from flowmap_jax import evaluate_images  # pylint: disable=g-import-not-at-top
    grid = evaluate_images.image_grid(exp, params, (1, 2, 4, 8))
    writer.write_images(step, {'train/samples': grid[None]})
    if workdir is not None:
      plots.save_png(grid, epath.Path(workdir, 'plots', f'grid_{step}.png'))
    return
  rng = jax.random.key(exp.config.seed + 20_000)
  panels = {'data': np.asarray(toy.sample(exp.config.data.name, rng, n))}
  for k in (1, 2, 4, 8):
    panels[f'{k} step'] = flow_map_samples(exp, params, rng, n, k, n)
  writer.write_images(step, {'train/samples': plots.density_panel(panels)[None]})
