"""A workdir's evaluation (2-D): samples -> KL and energy distance -> eval.json / eval.md, plots.

Every sampler starts from the same base noise. The flow map samples with the slowest evaluation EMA
(never the loss's target EMA). For distillation runs the teacher is evaluated too (Euler at the same
NFEs and an adaptive ODE); its numbers are taken from the teacher's own eval.json when that was
computed with the same estimator settings, so a teacher shared by several students is evaluated once.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from flowmap_jax import sampling
from flowmap_jax.data import toy
from flowmap_jax.evaluation import kl as kl_lib
from flowmap_jax.evaluation import plots


def _estimator(config):
  e = config.eval
  return {'num_samples': int(e.num_samples), 'energy_samples': int(e.energy_samples),
          'data': config.data.name, 'seed': int(config.seed), 'ode': e.teacher_ode,
          'ode_rtol': float(e.ode_rtol), 'ode_atol': float(e.ode_atol),
          'steps': [int(n) for n in e.steps]}


def _scores(data, samples, energy_n):
  return {'kl': kl_lib.kl(data, samples),
          'energy': kl_lib.energy_distance(data[:energy_n], samples[:energy_n])}


def _noise_fn(exp):
  sigma0 = jnp.asarray(exp.sigma0, jnp.float32)
  return lambda key, n: sigma0 * jax.random.normal(key, (n,) + exp.data_shape)


def _samples(exp, sampler, rng, n, batch_size):
  """`sampler(x0)` over n base-noise draws, batch by batch (one jit for every batch)."""
  noise = _noise_fn(exp)
  run = jax.jit(lambda key, m: sampler(noise(key, m)), static_argnums=1)
  return sampling.in_batches(run, rng, n, batch_size)


def flow_map_samples(exp, params, rng, n, num_steps, batch_size):
  f = lambda x0: sampling.flow_map_sample(exp.apply_fn, params, x0, sampling.uniform_grid(num_steps))
  return _samples(exp, f, rng, n, batch_size)


def teacher_scores(texp, tparams, data, rng, config):
  """Teacher Euler at each step count and its adaptive ODE, scored against `data`."""
  e = config.eval
  v = texp.velocity(tparams)
  out = {'teacher_euler': {}}
  panels = {}
  for n in e.steps:
    x = _samples(texp, lambda x0: sampling.euler(v, x0, n), rng, e.num_samples, e.batch_size)
    out['teacher_euler'][str(n)] = _scores(data, x, e.energy_samples)
    panels[f'Euler {n}'] = x
  ode = lambda x0: sampling.adaptive(v, x0, e.teacher_ode, e.ode_rtol, e.ode_atol)
  x, nfes = _samples(texp, ode, rng, e.num_samples, e.batch_size)
  out['teacher_ode'] = dict(_scores(data, x, e.energy_samples), nfe=float(np.mean(nfes)))
  panels[f'{e.teacher_ode} ({out["teacher_ode"]["nfe"]:.0f} NFE)'] = x
  return out, panels


def _cached_teacher(teacher_workdir, config):
  path = epath.Path(teacher_workdir) / 'eval.json'
  if not path.exists():
    return None
  cached = json.loads(path.read_text())
  if cached.get('estimator') != _estimator(config) or 'teacher_ode' not in cached:
    return None
  return {k: cached[k] for k in ('teacher_euler', 'teacher_ode')}


def evaluate(exp, state, workdir, *, writer=None, teacher_exp=None, teacher_params=None,
             teacher_workdir=None):
  from flowmap_jax.train import slowest_ema  # pylint: disable=g-import-not-at-top
  config = exp.config
  e = config.eval
  k_data, k_floor, k_noise = jax.random.split(jax.random.key(config.seed + 10_000), 3)
  draw = jax.jit(lambda key, n: toy.sample(config.data.name, key, n), static_argnums=1)
  data = sampling.in_batches(draw, k_data, e.num_samples, e.batch_size)
  data2 = sampling.in_batches(draw, k_floor, e.num_samples, e.batch_size)
  results = {'step': int(jax.device_get(state.step)), 'loss': config.loss.name,
             'estimator': _estimator(config), 'floor': _scores(data, data2, e.energy_samples)}
  # Host copies: evaluation runs on each process's local devices, whatever the training mesh.
  params = jax.device_get(slowest_ema(state))
  teacher_params = jax.device_get(teacher_params)
  panels = {'data': data}

  if config.loss.name != 'fm':
    results['flow_map'] = {}
    for n in e.steps:
      x = flow_map_samples(exp, params, k_noise, e.num_samples, n, e.batch_size)
      results['flow_map'][str(n)] = _scores(data, x, e.energy_samples)
      panels[f'flow map {n}'] = x

  # A teacher run compares itself; a distillation run compares its teacher.
  texp, tparams = (exp, params) if config.loss.name == 'fm' else (teacher_exp, teacher_params)
  if texp is not None and (config.loss.name == 'fm' or e.compare_teacher):
    cached = _cached_teacher(teacher_workdir, config) if teacher_workdir else None
    if cached is not None:
      results.update(cached)
      results['teacher_source'] = str(epath.Path(teacher_workdir) / 'eval.json')
    else:
      scores, tpanels = teacher_scores(texp, tparams, data, k_noise, config)
      results.update(scores)
      if config.loss.name == 'fm':
        panels.update(tpanels)

  if jax.process_index() == 0:
    epath.Path(workdir, 'eval.json').write_text(json.dumps(results, indent=2))
    epath.Path(workdir, 'eval.md').write_text(markdown(results))
    image = plots.density_panel(panels, title=f'{config.loss.name}, step {results["step"]}')
    plots.save_png(image, epath.Path(workdir, 'plots', 'samples.png'))
    if writer is not None:
      writer.write_images(results['step'], {'eval/samples': image[None]})
      scalars = {f'eval/flow_map_kl_{n}': v['kl'] for n, v in results.get('flow_map', {}).items()}
      writer.write_scalars(results['step'], scalars)
  logging.info('Evaluation of %s:\n%s', workdir, markdown(results))
  return results


def write_sample_plots(exp, state, writer, step, n=20_000):
  """Sample plots at 1/2/4/8 steps to TensorBoard during training (process 0)."""
  from flowmap_jax.train import slowest_ema  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    return
  params = jax.device_get(slowest_ema(state))
  rng = jax.random.key(exp.config.seed + 20_000)
  panels = {'data': np.asarray(toy.sample(exp.config.data.name, rng, n))}
  for k in (1, 2, 4, 8):
    panels[f'{k} step'] = flow_map_samples(exp, params, rng, n, k, n)
  writer.write_images(step, {'train/samples': plots.density_panel(panels)[None]})


def markdown(results):
  """eval.json as a Markdown table: KL (energy distance) per sampler and step count."""
  steps = results['estimator']['steps']
  fmt = lambda r: f'{r["kl"]:.4f} ({r["energy"]:.4f})'
  lines = [f'# Evaluation at step {results["step"]} ({results["loss"]})', '',
           f'KL(data ‖ model) on {results["estimator"]["num_samples"]:,} samples, energy distance on '
           f'{results["estimator"]["energy_samples"]:,} in parentheses; lower is better.', '',
           '| sampler | ' + ' | '.join(f'{n} NFE' for n in steps) + ' |',
           '|---' * (len(steps) + 1) + '|']
  for key, label in (('flow_map', 'flow map'), ('teacher_euler', 'teacher Euler')):
    if key in results:
      lines.append(f'| {label} | ' + ' | '.join(fmt(results[key][str(n)]) for n in steps) + ' |')
  if 'teacher_ode' in results:
    o = results['teacher_ode']
    lines.append(f'\nTeacher adaptive ODE ({results["estimator"]["ode"]}, {o["nfe"]:.0f} NFE): '
                 f'{fmt(o)}.')
  lines.append(f'\nEstimator floor (two independent data sets): {fmt(results["floor"])}.')
  return '\n'.join(lines) + '\n'
