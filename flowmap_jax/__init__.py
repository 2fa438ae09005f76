"""flowmap_jax: flow maps in JAX/Flax.

`flowmap_jax.load(workdir)` returns a trained run's model (flowmap_jax/api.py, docs/api.md); it is
imported on first use, so `from flowmap_jax import config_io` and the entry point stay light.
"""


def __getattr__(name):
  if name in ('load', 'Model'):
    from flowmap_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['load', 'Model']
