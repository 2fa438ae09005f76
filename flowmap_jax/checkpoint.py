"""Orbax checkpoints under `workdir/checkpoints`: save, resume from the latest, load a teacher.

Saves happen on every process (Orbax coordinates them; saving on process 0 only hangs multi-host).
Paths go through etils.epath, so a workdir may be local or on a bucket (gs://...).
A checkpoint holds the item 'state' (the TrainState) and, for runs that read files, 'data': the grain
iterator of every process (one small JSON file per process), so a resumed run reads on from there.
"""
import time

import grain
import jax
import jax.experimental.multihost_utils  # pylint: disable=unused-import
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


def manager(workdir, keep=3, every=None):
  """The workdir's CheckpointManager. `every`: the save cadence `should_save` follows (every N steps
  and at a preemption sync point; not Orbax's default extra save at the first step)."""
  policies = ocp.checkpoint_managers
  decision = None if every is None else policies.AnySavePolicy(
      [policies.FixedIntervalPolicy(every), policies.PreemptionCheckpointingPolicy()])
  return ocp.CheckpointManager(
      epath.Path(workdir).absolute() / 'checkpoints',
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           save_decision_policy=decision))


def save(mngr, state, data_iter=None, *, force=True):
  step = int(jax.device_get(state.step))
  items = {'state': ocp.args.StandardSave(state)}
  if data_iter is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iter)
  mngr.save(step, args=ocp.args.Composite(**items), force=force)
  return step


# TrainState fields added after checkpoints were first written, with the value an older checkpoint
# (which lacks them) means: 'weighting' is {} for loss.weighting = 'none'.
_ADDED_FIELDS = {'weighting': {}}


def _restore_state(mngr, step, abstract_state):
  """The TrainState saved at `step`. A checkpoint written before a field of _ADDED_FIELDS existed is
  restored without it and gets the field's old meaning, when the run still means that."""
  restore = lambda target: mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target))).state
  try:
    return restore(abstract_state)
  except ValueError as newer_layout_error:
    added = {k: v for k, v in _ADDED_FIELDS.items() if getattr(abstract_state, k) == v}
    if not added:
      raise
    fields = {k: v for k, v in vars(abstract_state).items() if k not in added}
    try:
      older = restore(fields)
    except Exception:  # pylint: disable=broad-except  (not the older layout either)
      raise newer_layout_error from None
    return abstract_state.replace(**older, **added)


def restore_latest(mngr, abstract_state, data_iter=None):
  """The latest checkpoint that restores, or None; `data_iter` (a grain iterator) is set in place
  to the position saved with it. A data position that does not restore (another process count, a
  checkpoint saved without one) costs only the data order: it is reported and the state is used.

  An unreadable latest checkpoint (a crash mid-write, a truncated or corrupted file) is reported,
  moved aside to `checkpoints_unreadable/` (so the run can write that step again) and the previous one
  is tried. Orbax commits atomically, so a half-written save is never listed as a step at all.
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      state = _restore_state(mngr, step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      message = f'{type(e).__name__}: {str(e).splitlines()[0][:500] if str(e) else ""}'
      aside = (epath.Path(mngr.directory).parent / 'checkpoints_unreadable'
               / f'{step}_{int(time.time())}')
      logging.warning('Checkpoint at step %d in %s is unreadable (%s); moved it to %s and '
                      'trying the previous one.', step, mngr.directory, message, aside)
      jax.experimental.multihost_utils.sync_global_devices(f'unreadable_{step}')
      if jax.process_index() == 0:
        aside.parent.mkdir(parents=True, exist_ok=True)
        (epath.Path(mngr.directory) / str(step)).rename(aside)
      jax.experimental.multihost_utils.sync_global_devices(f'moved_{step}')
      mngr.reload()
      continue
    if data_iter is not None:
      try:
        mngr.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(data_iter)))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('The data position saved at step %d in %s does not restore (%s: %s); the '
                        'state does, so the run resumes with its data order started over.', step,
                        mngr.directory, type(e).__name__, str(e).splitlines()[0][:300] if str(e)
                        else '')
    return state
  return None


def restore_fields(mngr, abstract_fields, errors=None):
  """(step, fields): only some fields of the latest checkpoint that has them (e.g. {'eval_emas': ...}
  of a teacher): a partial restore, so a teacher loads whatever else its train state held; (None,
  None) when none restores. Nothing is moved; `errors` collects (step, message) of checkpoints that
  do not restore."""
  restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), abstract_fields)
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      return step, mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=abstract_fields, restore_args=restore_args, partial_restore=True))).state
    except Exception as e:  # pylint: disable=broad-except
      message = f'{type(e).__name__}: {str(e).strip()[:500]}'
      logging.warning('Checkpoint at step %d in %s does not restore (%s).', step, mngr.directory,
                      message)
      if errors is not None:
        errors.append((step, message))
  return None, None


def restore_eval_emas(workdir, exp):
  """(step, {rate: params}, errors): the evaluation EMAs of the latest checkpoint of `workdir` that
  restores into `exp`'s shapes and shardings (a partial restore: whatever else the state holds, and
  on whatever mesh it was written); (None, None, errors) when none does."""
  mngr = manager(workdir)
  errors = []
  step, fields = restore_fields(mngr, {'eval_emas': exp.abstract_state().eval_emas}, errors)
  mngr.close()
  return step, None if fields is None else fields['eval_emas'], errors


def has_checkpoint(workdir):
  d = epath.Path(workdir) / 'checkpoints'
  return d.is_dir() and any(p.name.isdigit() for p in d.iterdir())
