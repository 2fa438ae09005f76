"""Orbax checkpoints under `workdir/checkpoints`: save, resume from the latest, load a teacher.

Saves happen on every process (Orbax coordinates them; saving on process 0 only hangs multi-host).
"""
import os

import jax
import orbax.checkpoint as ocp
from absl import logging


def manager(workdir, keep=3):
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, 'checkpoints')),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr, state, *, force=True):
  step = int(jax.device_get(state.step))
  mngr.save(step, args=ocp.args.StandardSave(state), force=force)
  return step


def restore_latest(mngr, abstract_state):
  """The latest checkpoint that restores, or None. An unreadable latest checkpoint is reported and the
  previous one is tried (a crash mid-write, a truncated file)."""
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      state = mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
      return state
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Checkpoint at step %d in %s is unreadable (%s: %s); trying the previous one.',
                      step, mngr.directory, type(e).__name__, str(e).splitlines()[0][:300])
  return None


def has_checkpoint(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))
