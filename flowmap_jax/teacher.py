"""A teacher as its workdir says it is: its saved config, its weights, training it when it is missing,
and its (classifier-free guided) velocity b_t(x | y) = v_θ(t, t, x | y) (docs/losses.md, "Teachers").

Which config describes the teacher:
- a workdir with a checkpoint: the `config.json` saved beside it (what the teacher was trained with),
  or `teacher.config` for a checkpoint that has none;
- a workdir without one: `teacher.config` with the student's data block and seed, and the teacher is
  trained there first (by the `train_fn` the caller passes), unless `teacher.require_existing`.
Either way a teacher whose data differ from the student's (name, σ0, image size, classes) is a
config error that names both.
"""
import copy
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from etils import epath

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import state as state_lib
from flowmap_jax import validate
from flowmap_jax.losses import common

# The data fields a teacher must share with its student: they decide the network's input scale σ0,
# its shape and its label embedding, and what distribution its velocity transports to.
# Not data.path: a file moved (another machine, a Colab upload) is still the teacher's data.
DATA_FIELDS = ('name', 'sigma0', 'image_size', 'class_conditional', 'channels', 'num_classes')


@dataclasses.dataclass(frozen=True)
class Teacher:
  exp: state_lib.Experiment
  params: Any          # its slowest evaluation EMA
  workdir: str
  source: str          # where its config came from
  step: Any = None     # the checkpoint's step: scores of the teacher kept for reuse name it


def workdir_of(config, workdir):
  return config.teacher.workdir or str(epath.Path(workdir) / 'teacher')


def guided_apply_fn(exp, guidance=1.0, channels=None):
  """(params, s, t, x, y) -> v_θ(s, t, x | y) of `exp`'s network, with labels and guidance w ≠ 1
  classifier-free guided: v_u + w (v_c − v_u), v_u taking the null label, in one network call on
  the doubled batch (docs/losses.md, "Teachers"; for a flow map, docs/api.md). With `channels`,
  only the first that many channels are guided and the rest are v_c (SiT's and DiT's
  forward_with_cfg, docs/sit.md)."""
  if guidance == 1.0:
    return exp.apply_fn

  def apply(params, s, t, x, y=None):
    if y is None:
      return exp.apply_fn(params, s, t, x, y)
    null = jnp.full_like(y, exp.num_classes)
    v_c, v_u = common.apply_many(lambda *a: exp.apply_fn(params, *a),
                                 [(s, t, x, y), (s, t, x, null)])
    guided = v_u + guidance * (v_c - v_u)
    if channels is None:
      return guided
    return jnp.concatenate([guided[..., :channels], v_c[..., channels:]], axis=-1)
  return apply


def velocity_fn(exp, guidance=1.0):
  """params ↦ the diagonal (t, x, y) -> v_θ(t, t, x | y) of `exp`'s network as a velocity field,
  classifier-free guided at w = `guidance` (guided_apply_fn)."""
  apply = guided_apply_fn(exp, guidance)
  return lambda params: lambda t, x, y=None: apply(params, t, t, x, y)


def config_of(config, workdir):
  """(teacher config, teacher workdir, where the config came from) for a student `config`."""
  tworkdir = workdir_of(config, workdir)
  saved = epath.Path(tworkdir) / 'config.json'
  exists = checkpoint.has_checkpoint(tworkdir)
  if exists and saved.exists():
    return config_io.from_json(saved.read_text()), tworkdir, str(saved)
  tconfig = config_io.load(config.teacher.config)
  if exists:
    return tconfig, tworkdir, config.teacher.config
  # The student's data, and its seed: students of several seeds get teachers of those seeds, so a
  # spread over seeds includes the teacher's.
  with tconfig.unlocked():
    tconfig.data = copy.deepcopy(config.data)
    tconfig.seed = config.seed
  return tconfig, tworkdir, f"{config.teacher.config} with the student's data block and seed"


def check_data(config, tconfig, source):
  """A student and a teacher must describe the same data (DATA_FIELDS)."""
  differ = [f for f in DATA_FIELDS if config.data.get(f) != tconfig.data.get(f)]
  if differ:
    show = lambda d: ', '.join(f'{f}={d.get(f)!r}' for f in differ)
    raise validate.ConfigError([
        f"The student's data ({show(config.data)}) and its teacher's ({show(tconfig.data)}, from "
        f'{source}) differ: a teacher transports to its own data. Train the student on the '
        "teacher's data, or point teacher.workdir at a teacher of this data (or at an empty "
        'folder, where one is trained first).'])


def load(config, workdir, train_fn=None, require_existing=False):
  """The student's Teacher, trained first by `train_fn(tconfig, tworkdir)` when its workdir has no
  checkpoint (unless teacher.require_existing, `require_existing` or no `train_fn`)."""
  tconfig, tworkdir, source = config_of(config, workdir)
  check_data(config, tconfig, source)
  if not checkpoint.has_checkpoint(tworkdir):
    if config.teacher.require_existing or require_existing or train_fn is None:
      raise validate.ConfigError([
          f'teacher.require_existing=True but no teacher checkpoint exists at '
          f'{epath.Path(tworkdir).absolute() / "checkpoints"}: train it with `python -m '
          f'flowmap_jax.main --config {config.teacher.config} --workdir {tworkdir}` (on the '
          "student's data), or set teacher.workdir to where it is."])
    train_fn(tconfig, tworkdir)
    source = str(epath.Path(tworkdir) / 'config.json')
  texp = state_lib.Experiment(tconfig)
  step, emas, errors = checkpoint.restore_eval_emas(tworkdir, texp)
  if emas is None:
    raise validate.ConfigError([
        f'The teacher checkpoint in {epath.Path(tworkdir).absolute()}/checkpoints does not match the '
        f'teacher config {source} (model {tconfig.model.name}): '
        + '; '.join(f'step {s}: {m}' for s, m in errors)
        + '. Point teacher.config at the config the teacher was trained with, or teacher.workdir '
        'at a teacher trained with this one.'])
  return Teacher(texp, state_lib.slowest_ema(emas), tworkdir, source, step)


def check_init_shapes(exp, teacher):
  """Initialising from a teacher needs identical parameter shapes; name both configs otherwise."""
  want = jax.eval_shape(exp.init_params, jax.random.key(0))
  got_shapes = jax.tree.map(lambda a: tuple(a.shape), teacher.params)
  want_shapes = jax.tree.map(lambda a: tuple(a.shape), want)
  if got_shapes != want_shapes:
    raise validate.ConfigError([
        f'train.init_from_teacher=True, but the teacher ({teacher.source}) has parameter shapes '
        f'{_short(got_shapes)} and this model ({exp.config.model.name}: '
        f'{_model_block(exp.config)}) has {_short(want_shapes)}; give both the same model settings '
        'or set train.init_from_teacher=False.'])


def _model_block(config):
  m = config.model
  return ', '.join(f'{k} {v}' for k, v in m[m.name].items()) if m.name in m else m.name


def _short(tree):
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))
  return '{' + ', '.join(f'{jax.tree_util.keystr(k)}: {v}' for k, v in leaves[:4]) + (
      ', …}' if len(leaves) > 4 else '}')
