"""Samplers (docs/sampling.md): few-step flow-map jumps and the teacher's ODE (Euler, Heun, adaptive).

`velocity(t, x, y)` takes a per-example t of shape (B,) and the labels y (None when unconditional);
the diagonal v_θ(t, t, · | y) of a network is one.
"""
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from flowmap_jax import flow_map
from flowmap_jax import progress


def uniform_grid(num_steps: int):
  return np.linspace(0.0, 1.0, num_steps + 1)


def flow_map_sample(apply_fn, params, x0, grid, y=None):
  """x ← X_θ(t_k, t_{k+1}, x) along `grid` (0 = t_0 < … < t_N = 1): N network evaluations."""
  ones = jnp.ones((x0.shape[0],), x0.dtype)
  grid = jnp.asarray(grid, x0.dtype)

  def step(x, times):  # one compiled network call, whatever the number of steps
    return flow_map.X(apply_fn, params, times[0] * ones, times[1] * ones, x, y), None

  return jax.lax.scan(step, x0, (grid[:-1], grid[1:]))[0]


def uniform_flow_map_sample(apply_fn, params, x0, num_steps, y=None):
  """`flow_map_sample` on the uniform grid of `num_steps` steps, where num_steps may be traced: one
  compiled loop serves every step count."""
  ones = jnp.ones((x0.shape[0],), x0.dtype)
  n = jnp.asarray(num_steps, x0.dtype)

  def step(k, x):  # t_k = k / N exactly as np.linspace gives it (N / N = 1)
    k = jnp.asarray(k, x0.dtype)
    return flow_map.X(apply_fn, params, (k / n) * ones, ((k + 1) / n) * ones, x, y)

  return jax.lax.fori_loop(0, num_steps, step, x0)


def euler(velocity, x0, num_steps: int, y=None):
  """Explicit Euler on dx/dt = b_t(x) from t = 0 to 1: `num_steps` evaluations. It is the flow-map
  sampler of the map x + (t − s) b_s(x), whose average velocity is the velocity at the start."""
  euler_map = lambda _, s, t, x, y_: velocity(s, x, y_)
  return uniform_flow_map_sample(euler_map, None, x0, num_steps, y)


def heun(velocity, x0, num_steps: int, y=None):
  """Heun's second-order method: 2 evaluations per step."""
  grid = uniform_grid(num_steps)
  ones = jnp.ones((x0.shape[0],), x0.dtype)
  x = x0
  for t_k, t_next in zip(grid[:-1], grid[1:]):
    h = t_next - t_k
    d0 = velocity(t_k * ones, x, y)
    d1 = velocity(t_next * ones, x + h * d0, y)
    x = x + 0.5 * h * (d0 + d1)
  return x


SOLVERS = {'tsit5': diffrax.Tsit5, 'dopri5': diffrax.Dopri5}


def adaptive(velocity, x0, solver='tsit5', rtol=1e-5, atol=1e-5, max_steps=4096, y=None):
  """Adaptive-step solve of the whole batch from t = 0 to 1 (diffrax). Returns (x1, nfe)."""
  if solver not in SOLVERS:
    raise ValueError(f'Unknown ODE solver {solver!r}; known: {sorted(SOLVERS)}.')
  ones = jnp.ones((x0.shape[0],), x0.dtype)
  term = diffrax.ODETerm(lambda t, x, _: velocity(t * ones, x, y))
  sol = diffrax.diffeqsolve(
      term, SOLVERS[solver](), t0=0.0, t1=1.0, dt0=0.05, y0=x0,
      stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps)
  # Tsit5 and Dopri5 are FSAL: 6 new evaluations a step (rejected ones included), plus the first.
  return sol.ys[-1], 6 * sol.stats['num_steps'] + 1


def in_batches(fn, rng, num_samples, batch_size, desc=None):
  """Concatenates fn(key_i, n_i) over batches (keys from rng): bounded memory for big sample counts.
  With `desc`, the batches' progress is shown (flowmap_jax/progress.py)."""
  out, aux = [], []
  starts = range(0, num_samples, batch_size)
  if desc:
    starts = progress.track(starts, desc=desc)
  for i, start in enumerate(starts):
    n = min(batch_size, num_samples - start)
    r = fn(jax.random.fold_in(rng, i), n)
    if isinstance(r, tuple):
      r, a = r
      aux.append(a)
    out.append(np.asarray(r))
  x = np.concatenate(out)
  return (x, aux) if aux else x
