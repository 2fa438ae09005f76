"""The flow map X_θ(s, t, x) = x + (t - s) · v_θ(s, t, x) and every time derivative of it.

docs/conventions.md §2. All derivatives are exact forward-mode derivatives from one `jax.jvp`, which
returns the primal with the tangent, so no loss needs a second forward pass for X. This is the only
module that differentiates in time; every loss goes through it.

`apply_fn(params, s, t, x, y) -> v` is the network v_θ; s and t have shape (B,), x has shape (B, ...),
y is None or the (B,) class labels of a class-conditional network (never differentiated).
"""
import jax
import jax.numpy as jnp

from flowmap_jax.interpolants import bcast


def X_from_v(s, t, x, v):
  """x + (t - s) v: the parameterisation, for a v already computed."""
  return x + bcast(t - s, x) * v


def X(apply_fn, params, s, t, x, y=None):
  """X_θ(s, t, x) = x + (t - s) v_θ(s, t, x); X(s, s, x) = x exactly."""
  return X_from_v(s, t, x, apply_fn(params, s, t, x, y))


def velocity(apply_fn, params, t, x, y=None):
  """The diagonal v_θ(t, t, x) = ∂_t X_θ(s, t, x)|_{t=s}: the model's instantaneous velocity."""
  return apply_fn(params, t, t, x, y)


def jvp(fn, params, s, t, x, *, ds=None, dt=None, dx=None, y=None):
  """(fn(params, s, t, x), directional derivative of fn along (ds, dt, dx)) from one `jax.jvp`.

  Only the arguments given a tangent are differentiated; the others are closed over, so no work is
  spent on zero tangents. `fn` is `X` or the raw network `apply_fn` (MeanFlow differentiates v).
  """
  primals = {'s': s, 't': t, 'x': x}
  tangents = {'s': ds, 't': dt, 'x': dx}
  names = [n for n in ('s', 't', 'x') if tangents[n] is not None]
  if not names:
    raise ValueError('jvp needs a tangent for at least one of s, t, x.')

  def f(*args):
    kw = dict(primals, **dict(zip(names, args)))
    return fn(params, kw['s'], kw['t'], kw['x'], y)

  return jax.jvp(f, tuple(primals[n] for n in names),
                 tuple(jnp.asarray(tangents[n], primals[n].dtype) * jnp.ones_like(primals[n])
                       for n in names))


def _fn_X(apply_fn):
  return lambda params, s, t, x, y: X(apply_fn, params, s, t, x, y)


def X_and_dt(apply_fn, params, s, t, x, y=None):
  """(X_θ(s,t,x), ∂_t X_θ(s,t,x)): the Lagrangian derivative of LMD/LSD."""
  return jvp(_fn_X(apply_fn), params, s, t, x, dt=1.0, y=y)


def X_and_ds(apply_fn, params, s, t, x, y=None):
  """(X_θ(s,t,x), ∂_s X_θ(s,t,x))."""
  return jvp(_fn_X(apply_fn), params, s, t, x, ds=1.0, y=y)


def X_and_eulerian(apply_fn, params, s, t, x, b, y=None):
  """(X_θ(s,t,x), ∂_s X_θ(s,t,x) + ∇_x X_θ(s,t,x) · b): the Eulerian residual of EMD, one jvp."""
  return jvp(_fn_X(apply_fn), params, s, t, x, ds=1.0, dx=b, y=y)


def X_ds_and_dx(apply_fn, params, s, t, x, b, y=None):
  """(X, ∂_s X, ∇_x X · b) for ESD, which needs the two apart to stop the gradient through ∇_x X · b
  only: two jvps, the second under stop_gradient so it costs a forward-mode pass and no backward.
  (One primal with both tangents batched by vmap measured 2.5× slower on CPU.)"""
  X_, dX_ds = X_and_ds(apply_fn, params, s, t, x, y)
  _, dX_dx = jvp(_fn_X(apply_fn), jax.lax.stop_gradient(params), s, t, x, dx=b, y=y)
  return X_, dX_ds, dX_dx


def v_and_eulerian(apply_fn, params, s, t, x, b, y=None):
  """(v_θ(s,t,x), ∂_s v_θ + ∇_x v_θ · b): the total derivative of v along a path moving at b
  (MeanFlow's D v)."""
  return jvp(apply_fn, params, s, t, x, ds=1.0, dx=b, y=y)
