"""Every config rule, checked before anything compiles; one message per problem, naming the field.

`validate(config)` raises ConfigError with all problems at once; main turns it into exit code 2 and
plain messages (no traceback).
"""
import json
import math
import os

import jax
import numpy as np
from etils import epath

from flowmap_jax import config_io
from flowmap_jax import interpolants
from flowmap_jax import losses
from flowmap_jax import models
from flowmap_jax import sampling
from flowmap_jax import state
from flowmap_jax import time_sampling
from flowmap_jax.data import images
from flowmap_jax.data import latents
from flowmap_jax.data import toy

# Fields a resumed run may change: how long it runs, how it logs and how it is evaluated, and how
# attention is computed (model.attention: the same function, so a run started on one machine can
# continue on another with the other implementation; runs saved before the field computed 'xla').
MUTABLE_PREFIXES = ('train.num_steps', 'train.log_every', 'train.checkpoint_every',
                    'train.keep_checkpoints', 'train.plot_every', 'train.allow_config_change',
                    'train.max_bad_steps', 'train.wandb_project', 'eval.',
                    'teacher.require_existing', 'model.attention')


class ConfigError(ValueError):
  """A config that cannot run; `.problems` lists one message per problem."""

  def __init__(self, problems):
    self.problems = list(problems)
    super().__init__('Invalid config:\n' + '\n'.join(f'  - {p}' for p in self.problems))


def _choice(problems, field, value, known):
  if value not in known:
    problems.append(f'{field}={value!r} is not known; use one of {sorted(known)}.')


def _in_range(problems, field, value, lo, hi, lo_open=False, hi_open=False):
  ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
  if not ok:
    problems.append(f'{field}={value!r} must be in {"(" if lo_open else "["}{lo}, {hi}'
                    f'{")" if hi_open else "]"}.')


def problems_of(config, num_devices=None, num_processes=None):
  """The list of problems (empty when the config is valid)."""
  p = []
  l, d, m, o, t = config.loss, config.data, config.model, config.optim, config.train
  _choice(p, 'loss.name', l.name, losses.REGISTRY)
  _choice(p, 'loss.interpolant', l.interpolant, interpolants.INTERPOLANTS)
  _choice(p, 'loss.time_sampler', l.time_sampler, time_sampling.TIME_SAMPLERS)
  _loss_option_problems(p, l)
  _choice(p, 'loss.weighting', l.get('weighting', 'none'), state.WEIGHTINGS)
  spec = losses.REGISTRY.get(l.name)
  if spec and not [q for q in p if q.startswith(f'loss.{l.name}')] and spec.guided(l):
    if not ((images.is_image(config.data) or latents.is_latent(config.data))
            and config.data.get('class_conditional')):
      p.append(f'loss.{l.name}\'s guidance options guide the target with the class labels: '
               'they need class-conditional image data (data.class_conditional=True).')
    elif not l.label_dropout:
      p.append(f'loss.{l.name} guidance needs loss.label_dropout > 0 (the null class it guides '
               'against is learned from the dropped labels; the official recipes drop 10 %).')
  _choice(p, 'model.name', m.name, models.MODELS)
  _choice(p, 'data.name', d.name, list(toy.DATASETS) + list(images.DATASETS) + ['latents'])
  _choice(p, 'optim.name', o.name, state.OPTIMIZERS)
  _choice(p, 'optim.schedule', o.schedule, state.SCHEDULES)
  _choice(p, 'eval.teacher_ode', config.eval.teacher_ode, sampling.SOLVERS)
  # Fields with a fixed set of values are checked even where the chosen network ignores them (the MLP
  # has no dtype or remat), so a typo never trains silently.
  _choice(p, 'model.dtype', m.get('dtype', 'float32'), models.DTYPES)
  _choice(p, 'model.remat', m.get('remat', 'none'), models.REMAT)
  _choice(p, 'model.attention', m.get('attention', 'xla'), models.ATTENTIONS)
  if 'mlp' in m:
    _choice(p, 'model.mlp.activation', m.mlp.activation, models.ACTIVATIONS)
  if 'dit' in m:
    _choice(p, 'model.dit.size', m.dit.size, models.DIT_SIZES)
    _choice(p, 'model.dit.time_embedding', m.dit.get('time_embedding', 'fourier'),
            models.TIME_EMBEDDINGS)
    if not isinstance(m.dit.get('qk_norm', False), bool):
      p.append(f'model.dit.qk_norm={m.dit.qk_norm!r} must be True or False.')
  _path_problems(p, config)
  if t.get('wandb_project', '') and not _wandb_installed():
    p.append(f'train.wandb_project={t.wandb_project!r} logs to Weights & Biases, which is not '
             'installed: pip install -e ".[wandb]" (or leave the field empty).')

  _in_range(p, 'loss.time_min', l.time_min, 0.0, 1.0)
  _in_range(p, 'loss.time_max', l.time_max, 0.0, 1.0)
  if not l.time_min < l.time_max:
    p.append(f'loss.time_min={l.time_min} must be below loss.time_max={l.time_max} '
             '(the time range is empty).')
  _in_range(p, 'loss.diag_fraction', l.diag_fraction, 0.0, 1.0)
  if not t.eval_ema_rates:
    p.append('train.eval_ema_rates is empty; give at least one rate, e.g. (0.999,).')
  for r in t.eval_ema_rates:
    _in_range(p, 'train.eval_ema_rates', r, 0.0, 1.0, hi_open=True)
  if not (isinstance(d.sigma0, str) and d.sigma0 == 'adaptive') and not (
      isinstance(d.sigma0, (int, float)) and d.sigma0 > 0):
    p.append(f"data.sigma0={d.sigma0!r} must be a positive number or 'adaptive'.")
  if o.schedule == 'sqrt' and not o.sqrt_steps > 0:
    p.append(f"optim.sqrt_steps={o.sqrt_steps} must be positive for optim.schedule='sqrt'.")
  if o.lr <= 0:
    p.append(f'optim.lr={o.lr} must be positive.')
  if o.clip < 0:
    p.append(f'optim.clip={o.clip} must be >= 0 (0 turns clipping off).')
  if t.num_steps < 0:
    p.append(f'train.num_steps={t.num_steps} must be >= 0.')
  for f in ('log_every', 'checkpoint_every', 'keep_checkpoints'):
    if t[f] < 1:
      p.append(f'train.{f}={t[f]} must be >= 1.')
  if t.max_bad_steps < 0:
    p.append(f'train.max_bad_steps={t.max_bad_steps} must be >= 0.')
  has_block = m.name in m
  if m.name in models.MODELS and not has_block:
    p.append(f"model.name={m.name!r} needs its option block model.{m.name}, which this config "
             'does not have; start from a config of that network.')
  if m.name == 'mlp' and has_block and (m.mlp.width < 1 or m.mlp.depth < 1):
    p.append(f'model.mlp.width={m.mlp.width} and model.mlp.depth={m.mlp.depth} must be >= 1.')
  if d.name in images.DATASETS and 'image_size' not in d:
    p.append(f"data.name={d.name!r} is an image set, but this config's data block is a 2-D one "
             '(no data.image_size); start from an image config, e.g. configs/fm_mnist.py.')
  elif d.name in images.DATASETS:
    _image_problems(p, config)
  elif latents.is_latent(d):
    _latent_problems(p, config)
  elif m.name in ('unet', 'adm', 'dit'):
    p.append(f'model.name={m.name!r} is an image network but data.name={d.name!r} is 2-D; use '
             "model.name='mlp'.")
  if m.name == 'mlp' and m.remat != 'none':
    p.append(f"model.remat={m.remat!r} applies to the image networks' blocks; the MLP keeps its "
             "activations (use 'none').")

  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = jax.process_count() if num_processes is None else num_processes
  mesh_size = _mesh_size(p, config.mesh, num_devices)
  if d.batch_size < 1:
    p.append(f'data.batch_size={d.batch_size} must be >= 1.')
  elif mesh_size and d.batch_size % mesh_size:
    p.append(f'data.batch_size={d.batch_size} is not divisible by the {mesh_size} devices of the '
             f'mesh; use a multiple of {mesh_size}.')
  elif d.batch_size % num_processes:
    p.append(f'data.batch_size={d.batch_size} is not divisible by the {num_processes} processes.')

  e = config.eval
  if not e.steps or any(int(n) < 1 for n in e.steps):
    p.append(f'eval.steps={tuple(e.steps)} must be positive step counts.')
  if d.name in toy.DATASETS and (e.energy_samples % 1000 or e.energy_samples < 1000
                                 or e.energy_samples > e.num_samples):
    p.append(f'eval.energy_samples={e.energy_samples} must be a multiple of 1000, at most '
             f'eval.num_samples={e.num_samples}.')

  if loads_teacher(config):
    distils = l.name in losses.REGISTRY and losses.spec(l.name).needs_teacher
    path = config_io.resolve(config.teacher.config.partition(':')[0]) if config.teacher.config else ''
    if not path or not os.path.exists(path):
      why = (f'loss.name={l.name!r} distils a teacher' if distils
             else 'train.init_from_teacher=True')
      p.append(f'{why}, but teacher.config='
               f'{config.teacher.config!r} is not a config file; name the teacher\'s config, e.g. '
               "configs/fm_checkerboard.py.")
  return p


def _wandb_installed():
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec('wandb') is not None


def _is_local(path):
  return '://' not in str(path)


def _path_problems(p, config):
  """Path fields: a file that is named must be there and be a file, a folder a folder (local paths;
  a bucket path, gs://..., is read as it is). data.path (npz, folder) is checked with the image
  fields; --mode fid_stats writes eval.fid_stats, so that one only may not exist yet."""
  e, t = config.eval, config.teacher
  for field in ('fid_weights', 'classifier'):
    path = e.get(field, '')
    if path and _is_local(path) and not os.path.isfile(path):
      p.append(f'eval.{field}={path!r} ' + ('is a folder, not a file.' if os.path.isdir(path)
                                            else 'does not exist.'))
  stats = e.get('fid_stats', '')
  if stats and _is_local(stats) and os.path.isdir(stats):
    p.append(f'eval.fid_stats={stats!r} is a folder; name the .npz file of the statistics.')
  if t.workdir and _is_local(t.workdir) and os.path.exists(t.workdir) and not os.path.isdir(
      t.workdir):
    p.append(f'teacher.workdir={t.workdir!r} is a file, not a workdir (a folder).')
  data_dir = config.data.get('data_dir', '')
  if data_dir and _is_local(data_dir) and not os.path.isdir(data_dir):
    p.append(f'data.data_dir={data_dir!r} is not a folder (the tfds data directory).')


def _loss_option_problems(p, l):
  """Each loss's block loss.<name> against its registry entry; the chosen loss's must exist."""
  for name, spec in losses.REGISTRY.items():
    if not spec.options:
      continue
    if name not in l:
      if name == l.name:
        p.append(f'loss.name={name!r} needs its option block loss.{name} '
                 f'({", ".join(spec.options)}), which this config does not have.')
      continue
    for field, option in spec.options.items():
      if field not in l[name]:
        p.append(f'loss.{name}.{field} is missing (default {option.default!r}).')
      else:
        problem = option.problem(f'loss.{name}.{field}', l[name][field])
        if problem:
          p.append(problem)


def _image_problems(p, config):
  d, m = config.data, config.model
  spec = images.DATASETS[d.name]
  if m.name == 'mlp':
    p.append(f"data.name={d.name!r} is an image set: use model.name='unet', 'adm' or 'dit'.")
  if isinstance(d.sigma0, str) or not d.sigma0 > 0:
    p.append(f'data.sigma0={d.sigma0!r}: image sets need a positive number (0.5 for [-1, 1] '
             "images); 'adaptive' is for 2-D data.")
  if d.image_size < 8:
    p.append(f'data.image_size={d.image_size} must be set (>= 8) for the image set {d.name!r}.')
  elif spec.native_size and d.image_size != spec.native_size:
    p.append(f'data.image_size={d.image_size}: {d.name!r} is stored at {spec.native_size}; use '
             f'that (or another data set for another size).')
  if d.name in images.LOCAL:
    path = d.get('path', '')
    if not path:
      p.append(f"data.path is not set: data.name={d.name!r} reads "
               f"{'an .npz file' if d.name == 'npz' else 'a folder of images'} from it.")
    elif not _is_local(path):
      pass  # on a bucket (gs://...): images.source opens it through etils.epath, naming a problem
    elif not os.path.exists(path):
      p.append(f'data.path={path!r} does not exist.')
    elif d.name == 'npz' and not os.path.isfile(path):
      p.append(f"data.path={path!r} is a folder; data.name='npz' reads one .npz file (use "
               "data.name='folder' for a folder of images).")
    elif d.name == 'folder' and not os.path.isdir(path):
      p.append(f"data.path={path!r} is a file; data.name='folder' reads a folder of images (use "
               "data.name='npz' for an .npz file).")
    if d.get('channels', 3) not in (1, 3):
      p.append(f"data.channels={d.get('channels')!r} must be 1 (grayscale) or 3 (RGB).")
    if d.class_conditional and d.get('num_classes', 0) < 1:
      p.append('data.class_conditional=True needs data.num_classes (the number of labels in '
               f'data.path) for data.name={d.name!r}.')
  elif d.class_conditional and not spec.num_classes:
    p.append(f'data.class_conditional=True but {d.name!r} has no labels.')
  _network_problems(p, config, d.image_size, 'data.image_size')


def _latent_problems(p, config):
  """data.name='latents' (data/latents.py): the VAE file, the latent folder, the image set they are
  made of, the normalisation; then the network against the latent size."""
  d, m = config.data, config.model
  if 'latent_shape' not in d or 'images' not in d:
    p.append("data.name='latents' needs a latent data block (data.latent_shape, data.images, "
             'data.vae, ...); start from configs/fm_imagenet256.py.')
    return
  if m.name == 'mlp':
    p.append("data.name='latents' is an image set's latents: use model.name='dit', 'unet' or 'adm'.")
  if not d.vae:
    p.append("data.vae is not set: name the VAE's diffusion_pytorch_model.safetensors (e.g. of "
             'stabilityai/sd-vae-ft-ema); latents are encoded and samples decoded with it.')
  elif _is_local(d.vae) and not os.path.isfile(d.vae):
    p.append(f'data.vae={d.vae!r} ' + ('is a folder; name the .safetensors file in it.'
                                        if os.path.isdir(d.vae) else 'does not exist.'))
  if not d.path:
    p.append("data.path is not set: name the folder of the prepared latents (--mode "
             'prepare_latents writes it, training reads it).')
  elif _is_local(d.path) and os.path.exists(d.path) and not os.path.isdir(d.path):
    p.append(f'data.path={d.path!r} is a file; latents are a folder (shards and manifest.json).')
  shape = tuple(d.latent_shape)
  if len(shape) != 3 or any(int(n) < 1 for n in shape) or shape[0] != shape[1]:
    p.append(f'data.latent_shape={shape} must be (h, h, c) with positive sizes.')
    return
  factor = d.image_size // shape[0] if shape[0] else 0
  if d.image_size < 8 or factor < 1 or factor * shape[0] != d.image_size or factor & (factor - 1):
    p.append(f'data.image_size={d.image_size} must be the latent size {shape[0]} times a power of '
             "two (the VAE's downsampling; 8 for SD's VAE).")
  _choice(p, 'data.posterior', d.posterior, latents.POSTERIORS)
  _choice(p, 'data.images.store_dtype', d.images.store_dtype, latents.STORE_DTYPES)
  _choice(p, 'data.images.vae_dtype', d.images.vae_dtype, latents.VAE_DTYPES)
  mean, std = tuple(d.latent_mean), tuple(d.latent_std)
  if mean or std:
    if len(mean) != shape[2] or len(std) != shape[2] or min(std) <= 0:
      p.append(f'data.latent_mean={mean} and data.latent_std={std} must each give one value per '
               f'latent channel ({shape[2]}), the stds positive (or both be empty: '
               'data.latent_scale).')
  elif not d.latent_scale > 0:
    p.append(f'data.latent_scale={d.latent_scale} must be positive.')
  if isinstance(d.sigma0, str) or not d.sigma0 > 0:
    p.append(f'data.sigma0={d.sigma0!r}: latents need a positive number (1 for unit-variance '
             'latents).')
  for f in ('batch_size', 'shard_size'):
    if d.images[f] < 1:
      p.append(f'data.images.{f}={d.images[f]} must be >= 1.')
  source = d.images.name
  if source not in images.DATASETS:
    p.append(f'data.images.name={source!r} is not an image set; use one of '
             f'{sorted(images.DATASETS)}.')
  else:
    spec = images.DATASETS[source]
    if source in images.LOCAL and not d.images.path:
      p.append(f'data.images.path is not set: data.images.name={source!r} reads it.')
    if d.class_conditional and not images.labels_of(latents.image_config(d)):
      p.append(f'data.class_conditional=True but the latents\' images ({source!r}) have no labels'
               + (' (set data.images.num_classes)' if spec.tfds_name is None else '') + '.')
  _network_problems(p, config, shape[0], f'the latent size {shape[0]} (data.latent_shape)')


def _network_problems(p, config, size, what):
  """Rules of an image network on data of side `size`, and of labels, guidance and evaluation."""
  d, m, l, e = config.data, config.model, config.loss, config.eval
  if not 0 <= l.label_dropout < 1:
    p.append(f'loss.label_dropout={l.label_dropout} must be in [0, 1).')
  elif l.label_dropout and not d.class_conditional:
    p.append(f'loss.label_dropout={l.label_dropout} needs data.class_conditional=True.')
  if config.teacher.guidance < 0 or e.guidance < 0:
    p.append('teacher.guidance and eval.guidance must be >= 0 (1 = no guidance).')
  if e.fid_samples < 2 or e.grid_size < 1 or e.batch_size < 1:
    p.append(f'eval.fid_samples={e.fid_samples} must be >= 2 and eval.grid_size={e.grid_size}, '
             f'eval.batch_size={e.batch_size} >= 1.')
  if m.name not in ('unet', 'adm', 'dit') or m.name not in m:
    return
  if not 0 <= m[m.name].dropout < 1:
    p.append(f'model.{m.name}.dropout={m[m.name].dropout} must be in [0, 1).')
  if m.name in ('unet', 'adm') and size >= 8:
    u, n = m[m.name], m.name
    levels = len(u.channel_mult)
    if not levels or size % 2 ** (levels - 1):
      p.append(f'model.{n}.channel_mult={tuple(u.channel_mult)}: {levels} levels halve '
               f'{what}={size} {levels - 1} times; it must stay whole.')
    reached = [size >> i for i in range(levels)]
    for r in u.attn_resolutions:
      if r not in reached:
        p.append(f'model.{n}.attn_resolutions has {r}, which the U-Net never reaches (its '
                 f'resolutions are {reached}).')
    for c in {u.channels} | {u.channels * k for k in u.channel_mult}:
      if c < 4 or c % min(32, c // 4):
        p.append(f'model.{n}.channels={u.channels} × channel_mult gives {c} channels, which '
                 f'GroupNorm cannot split into min(32, {c} // 4) groups; use a multiple of 32 (or 4 '
                 'below 128).')
        break
  if m.name == 'dit':
    if size % m.dit.patch_size:
      p.append(f'{what}={size} is not divisible by model.dit.patch_size={m.dit.patch_size}.')


def _mesh_size(p, mesh, num_devices):
  sizes = (int(mesh.data), int(mesh.fsdp))
  if any(s == 0 or s < -1 for s in sizes) or sizes == (-1, -1):
    p.append(f'mesh.data={mesh.data}, mesh.fsdp={mesh.fsdp}: each must be a positive size or -1 '
             '(the rest), not both -1.')
    return None
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if num_devices % fixed or (-1 not in sizes and fixed != num_devices):
    p.append(f'mesh.data={mesh.data} × mesh.fsdp={mesh.fsdp} does not fit the {num_devices} '
             'devices; sizes must multiply to the device count (use -1 for the rest).')
    return None
  return num_devices


def warnings_of(config):
  """Valid but probably unintended settings, as sentences (train.py logs them)."""
  w = []
  t = config.train
  if t.eval_ema_rates and t.num_steps > 0:
    # The evaluation EMAs start at the starting weights and have no warm-up: after n steps they
    # still hold rate^n of them (0.999 after 1500 steps: 22 %).
    rate = max(t.eval_ema_rates)
    left = rate ** t.num_steps
    if left > 0.01:
      start = "the teacher's" if t.init_from_teacher else 'the random initialisation'
      w.append(f'train.eval_ema_rates: evaluation samples the slowest EMA ({rate}), which after '
               f'train.num_steps={t.num_steps} still holds {left:.1%} of its starting weights '
               f'({start}); for a run this short use a faster rate, e.g. '
               f'{math.floor(max(0.0, 1 - 5 / t.num_steps) * 1000) / 1000:g}, or more steps.')
  a = config.loss.get('alphaflow')
  if (config.loss.name == 'alphaflow' and a is not None and a.alpha_schedule != 'constant'
      and a.alpha_end_step != t.num_steps):
    # The curriculum's end is a step count fixed when the config was written, so a changed
    # train.num_steps does not move it; α-Flow's recipe ends the curriculum with training.
    w.append(f'loss.alphaflow.alpha_end_step={a.alpha_end_step} is not train.num_steps='
             f'{t.num_steps}: α reaches {a.alpha_end} (MeanFlow\'s objective at 0) at step '
             f'{a.alpha_end_step}, not at the end of training; to end the curriculum with '
             f'training, add --config.loss.alphaflow.alpha_end_step={t.num_steps}.')
  return w


def validate(config, **kw):
  problems = problems_of(config, **kw)
  if problems:
    raise ConfigError(problems)


# --------------------------------------------------------------------------- workdir and teacher


def loads_teacher(config):
  """Whether the run loads a teacher: its loss distils one, or it starts from the teacher's weights
  (train.init_from_teacher). An unknown loss loads none (problems_of names it)."""
  spec = losses.REGISTRY.get(config.loss.name)
  return bool(spec and spec.needs_teacher) or bool(config.train.init_from_teacher)


def config_differences(config, workdir):
  """The keys where `config` differs from the run saved in workdir, as 'key: old -> new' strings;
  [] when they agree or workdir holds no config.json. Not compared: MUTABLE_PREFIXES, the option
  blocks of the other losses (each loss reads only its own, so a changed ITVM default must not stop
  an LMD run from resuming), and where the teacher is found (teacher.config, teacher.workdir) in a
  run that loads no teacher: a self-distillation run moved into another study tree still resumes."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    return []
  old = config_io.with_added_fields(json.loads(path.read_text()))
  a, b = config_io.flatten(old), config_io.flatten(config_io.to_dict(config))
  unread = MUTABLE_PREFIXES + tuple(f'loss.{n}.' for n in losses.names() if n != config.loss.name)
  if not loads_teacher(config):
    unread += ('teacher.config', 'teacher.workdir')
  return [f'{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}'
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(unread)]


def check_workdir_config(config, workdir):
  """A workdir holds one run: a config that differs from the saved one (config_differences) stops
  the run with the differing keys, unless train.allow_config_change. Writes config.json."""
  diff = config_differences(config, workdir)
  if diff and not config.train.allow_config_change:
    raise ConfigError([
        f'{workdir} holds a run with a different config: ' + ', '.join(diff)
        + '. Use another --workdir, or --config.train.allow_config_change=True to continue '
        'this run with the new values.'])
  if jax.process_index() == 0:
    new = json.dumps(config_io.to_dict(config), indent=2)
    # Written aside and renamed: the other processes read config.json at this moment (above), and
    # a half-written one (JSONDecodeError) stopped process 1 of a fresh multi-process run.
    tmp = epath.Path(workdir) / 'config.json.tmp'
    tmp.write_text(new)
    tmp.replace(epath.Path(workdir) / 'config.json')
