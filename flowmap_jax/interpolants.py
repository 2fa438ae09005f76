"""Interpolants I_t = α_t x0 + β_t x1 and their time derivatives (docs/conventions.md §1).

Time runs from noise (t = 0, x0 ~ ρ0) to data (t = 1, x1 ~ data): α_0 = β_1 = 1, α_1 = β_0 = 0.
"""
from typing import Callable, NamedTuple

import jax.numpy as jnp


class Interpolant(NamedTuple):
  """α_t, β_t and their derivatives α'_t, β'_t as elementwise functions of t."""
  alpha: Callable
  beta: Callable
  dalpha: Callable
  dbeta: Callable


_HALF_PI = jnp.pi / 2

INTERPOLANTS = {
    'linear': Interpolant(
        alpha=lambda t: 1.0 - t,
        beta=lambda t: t,
        dalpha=lambda t: -jnp.ones_like(t),
        dbeta=lambda t: jnp.ones_like(t)),
    'trig': Interpolant(
        alpha=lambda t: jnp.cos(_HALF_PI * t),
        beta=lambda t: jnp.sin(_HALF_PI * t),
        dalpha=lambda t: -_HALF_PI * jnp.sin(_HALF_PI * t),
        dbeta=lambda t: _HALF_PI * jnp.cos(_HALF_PI * t)),
}


def get(name: str) -> Interpolant:
  if name not in INTERPOLANTS:
    raise ValueError(f'Unknown interpolant {name!r}; known: {sorted(INTERPOLANTS)}.')
  return INTERPOLANTS[name]


def bcast(t, x):
  """Reshapes a per-example time t of shape (B,) to broadcast against x of shape (B, ...)."""
  return jnp.reshape(t, t.shape + (1,) * (x.ndim - t.ndim))


def I(interp: Interpolant, t, x0, x1):
  """I_t = α_t x0 + β_t x1."""
  t = bcast(t, x0)
  return interp.alpha(t) * x0 + interp.beta(t) * x1


def dI(interp: Interpolant, t, x0, x1):
  """İ_t = α'_t x0 + β'_t x1 (the conditional velocity)."""
  t = bcast(t, x0)
  return interp.dalpha(t) * x0 + interp.dbeta(t) * x1
