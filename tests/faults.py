"""Faults injected from outside the package: the registry's loss replaced by one whose value is NaN at
chosen steps (the train step must skip such steps and the loop must stop or go on as configured).

In-process: `with poisoned('lsd', (3, 5)): train.train_and_evaluate(...)`.
As the entry point: `python tests/faults.py 3,5 --config=... --workdir=...` runs flowmap_jax.main.
"""
import contextlib
import dataclasses
import sys

import jax
import jax.numpy as jnp

from flowmap_jax import losses
from flowmap_jax import state as state_lib


def poisoned_loss(spec, steps, seed=0):
  """`spec` with a loss that is NaN at `steps` of a run with this seed. The loss cannot see the step,
  so it recognises the step's loss key (state.step_keys from the run's base key)."""
  _, base = state_lib.base_keys(seed)
  bad = jnp.stack([jax.random.key_data(state_lib.step_keys(jax.random.key_data(base), s)[2])
                   for s in steps])

  def loss_fn(apply_fn, params, x0, x1, rng, **kw):
    value, aux = spec.fn(apply_fn, params, x0, x1, rng, **kw)
    hit = jnp.any(jnp.all(jax.random.key_data(rng)[None] == bad, axis=-1))
    return jnp.where(hit, jnp.nan, value), aux

  return dataclasses.replace(spec, fn=loss_fn)


@contextlib.contextmanager
def poisoned(name, steps, seed=0):
  original = losses.REGISTRY[name]
  losses.REGISTRY[name] = poisoned_loss(original, steps, seed)
  try:
    yield
  finally:
    losses.REGISTRY[name] = original


def main():
  from absl import app  # pylint: disable=g-import-not-at-top
  from flowmap_jax import main as entry  # pylint: disable=g-import-not-at-top
  steps = tuple(int(s) for s in sys.argv.pop(1).split(','))
  for name in list(losses.REGISTRY):
    losses.REGISTRY[name] = poisoned_loss(losses.REGISTRY[name], steps)
  app.run(entry.main, flags_parser=entry.parse_flags)


if __name__ == '__main__':
  main()
