"""What every loss shares: drawing times and x_s, splitting the batch, reducing residuals.

A loss sees a batch whose first `n_diag` examples are diagonal (s = t) and the rest off-diagonal
(s < t). Per-example squared residuals are summed over the batch and divided by B, so the total is the
batch mean of each example's term, and the aux terms are the means within each part.
"""
import dataclasses
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from flowmap_jax import interpolants
from flowmap_jax import time_sampling

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Option:
  """One field of a loss's option block `config.loss.<name>`: its default and what it may be.

  `choices` for a named choice; otherwise a number in the interval from `lo` to `hi` (open at an end
  when `lo_open` / `hi_open`). `problem` says what is wrong with a value, or None.
  """
  default: Any
  choices: tuple = ()
  lo: float = -math.inf
  hi: float = math.inf
  lo_open: bool = False
  hi_open: bool = False

  def problem(self, field, value):
    if self.choices:
      if value not in self.choices:
        return f'{field}={value!r} is not known; use one of {sorted(self.choices)}.'
      return None
    ok = (value > self.lo if self.lo_open else value >= self.lo) and (
        value < self.hi if self.hi_open else value <= self.hi)
    if not ok:
      return (f'{field}={value!r} must be in {"(" if self.lo_open else "["}{self.lo}, {self.hi}'
              f'{")" if self.hi_open else "]"}.')
    return None


class Draw(NamedTuple):
  """One batch's times and points. `d`/`o` suffixes are the diagonal / off-diagonal parts."""
  s: jax.Array        # (B,)
  t: jax.Array        # (B,)
  x_s: jax.Array      # (B, ...)  I_s
  dI_s: jax.Array     # (B, ...)  İ_s
  n_diag: int
  y: Optional[jax.Array] = None  # (B,) class labels of a class-conditional model, else None

  def diag(self, a):
    return None if a is None else a[:self.n_diag]

  def off(self, a):
    return None if a is None else a[self.n_diag:]


def draw(x0, x1, rng, config, y=None) -> Draw:
  """Draws (s, t) from `rng` and builds x_s = I_s and İ_s from the batch (labels `y` ride along)."""
  interp = interpolants.get(config.interpolant)
  s, t, n_diag = time_sampling.sample_st(rng, x0.shape[0], config)
  return Draw(s, t, interpolants.I(interp, s, x0, x1), interpolants.dI(interp, s, x0, x1), n_diag,
              y)


def sqnorm(r):
  """Per-example ‖r‖², summed over every axis but the batch axis."""
  return jnp.sum(jnp.square(r), axis=tuple(range(1, r.ndim)))


def mean(a):
  return jnp.mean(a) if a.shape[0] else jnp.zeros((), a.dtype)


def reduce(diag_terms, off_terms, times=None, weighting=None, **extra_aux):
  """Total loss = (Σ diag terms + Σ off-diagonal terms) / B, with aux metrics.

  `times`: (s, t) of the whole batch, diagonal part first. With `weighting`, the learned w_φ(s, t)
  (docs/losses.md §9), each example's term ℓ enters as exp(−w_φ(s, t))·ℓ + w_φ(s, t).
  `loss/diag` and `loss/offdiag` are the means of the unweighted terms over each part (0 for an empty
  part), so they read the same with and without weighting; `extra_aux` are scalars added as they are.
  """
  n_diag, n_off = diag_terms.shape[0], off_terms.shape[0]
  terms = jnp.concatenate([diag_terms, off_terms])
  aux = {'loss/diag': mean(diag_terms), 'loss/offdiag': mean(off_terms),
         'time/diag_fraction': jnp.asarray(n_diag / (n_diag + n_off), terms.dtype)}
  if weighting is not None:
    if times is None:
      raise ValueError('A learned loss weighting needs the batch times: reduce(..., times=(s, t)).')
    w = weighting(*times).astype(terms.dtype)
    terms = jnp.exp(-w) * terms + w
    aux['weighting/w'] = jnp.mean(w)
  loss = jnp.sum(terms) / (n_diag + n_off)
  aux.update(extra_aux)
  return loss, aux


def require_teacher(name, teacher):
  if teacher is None:
    raise ValueError(f'Loss {name!r} distils a teacher: pass teacher=(t, x, y) -> b_t(x) '
                     '(a frozen flow-matching velocity).')


def fm_terms(apply_fn, params, t, x_t, dI_t, y=None):
  """Per-example flow matching ‖v_θ(t, t, I_t) - İ_t‖² (docs/losses.md §1)."""
  return sqnorm(apply_fn(params, t, t, x_t, y) - dI_t)


def apply_many(f, pieces):
  """f over several argument tuples in one call: concatenates along the batch axis, splits after.

  Used where every piece receives gradient (one larger network call is cheaper than several, and
  its backward is one too); parts under stop_gradient stay separate so they are not differentiated.
  """
  sizes = [p[0].shape[0] for p in pieces]
  cat = lambda args: None if args[0] is None else jnp.concatenate(args)  # labels of no model: None
  out = f(*[cat(args) for args in zip(*pieces)])
  ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
  return [out[e - n:e] for e, n in zip(ends, sizes)]
