"""Progress of long loops (evaluation samples, the ODE, FID features and statistics, batched sampling).

`track(iterable, total, desc)` yields the items unchanged and shows where it is, on process 0 only:
a tqdm bar when stderr is a terminal, otherwise (a log file, a notebook cell's captured output, a
cluster job) a log line every LOG_EVERY_S seconds with the count, the rate and the ETA, and a last
line with the total time when any line was written. A loop that finishes faster than that says
nothing, so short runs and the tests stay quiet.
"""
import sys
import time

import jax
from absl import logging

LOG_EVERY_S = 30.0


def _duration(seconds):
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


def _plural(unit):
  return unit + ('es' if unit.endswith(('s', 'sh', 'ch', 'x')) else 's')


def _logged(iterable, total, desc, unit, every_s):
  units = _plural(unit)
  start = last = time.monotonic()
  done, wrote = 0, False
  for item in iterable:
    yield item
    done += 1
    now = time.monotonic()
    if now - last >= every_s:
      rate = done / max(now - start, 1e-9)
      of = f'/{total}' if total else ''
      eta = f', ETA {_duration((total - done) / rate)}' if total else ''
      logging.info('%s: %d%s %s, %.3g %s/s, %s elapsed%s', desc, done, of, units, rate, units,
                   _duration(now - start), eta)
      last, wrote = now, True
  if wrote:
    logging.info('%s: %d %s done in %s.', desc, done, units, _duration(time.monotonic() - start))


def track(iterable, total=None, desc='', unit='batch', every_s=None):
  """`iterable`, with its progress shown (module docstring); `total` its length when known."""
  if total is None and hasattr(iterable, '__len__'):
    total = len(iterable)
  if jax.process_index() != 0:
    return iter(iterable)
  if sys.stderr.isatty():
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    return iter(tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=False,
                          file=sys.stderr))
  return _logged(iterable, total, desc, unit, LOG_EVERY_S if every_s is None else every_s)
