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


def _logged(iterable, total, desc, unit, every_s, size, size_unit):
  units = _plural(unit)
  start = last = time.monotonic()
  done, amount, wrote = 0, 0, False
  for item in iterable:
    yield item
    done += 1
    amount += size(item) if size else 0
    now = time.monotonic()
    if now - last >= every_s:
      elapsed = max(now - start, 1e-9)
      rate = done / elapsed
      of = f'/{total}' if total else ''
      eta = f', ETA {_duration((total - done) / rate)}' if total else ''
      speed = (f'{amount / elapsed:.3g} {_plural(size_unit)}/s' if size else
               f'{rate:.3g} {units}/s')
      logging.info('%s: %d%s %s, %s, %s elapsed%s', desc, done, of, units, speed,
                   _duration(now - start), eta)
      last, wrote = now, True
  if wrote:
    logging.info('%s: %d %s done in %s.', desc, done, units, _duration(time.monotonic() - start))


def _bar(iterable, total, desc, unit, size, size_unit):
  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
  if not size:
    yield from bar
    return
  start, amount = time.monotonic(), 0
  for item in bar:
    yield item
    amount += size(item)
    bar.set_postfix_str(f'{amount / max(time.monotonic() - start, 1e-9):.3g} '
                        f'{_plural(size_unit)}/s', refresh=False)


def track(iterable, total=None, desc='', unit='batch', every_s=None, size=None, size_unit='item'):
  """`iterable`, with its progress shown (module docstring); `total` its length when known. With
  `size(item)` (e.g. the images in a batch) the rate is given in `size_unit`s per second."""
  if total is None and hasattr(iterable, '__len__'):
    total = len(iterable)
  if jax.process_index() != 0:
    return iter(iterable)
  if sys.stderr.isatty():
    return _bar(iterable, total, desc, unit, size, size_unit)
  return _logged(iterable, total, desc, unit, LOG_EVERY_S if every_s is None else every_s, size,
                 size_unit)


class TrainingRate:
  """The training loop's progress: every `every_steps` steps, every `every_s` seconds and at the
  last step, a log line `R steps/s, P% (step/num_steps), ETA: ...` and the scalars steps_per_sec and
  uptime (what clu's ReportProgress reported, without its TensorFlow import). The first call only
  starts the clock, so the rate leaves out the first step's compilation."""

  def __init__(self, num_steps, writer, every_steps, every_s=60.0):
    self._num_steps, self._writer = num_steps, writer
    self._every_steps, self._every_s = every_steps, every_s
    self._t0 = time.monotonic()
    self._last = None   # (step, time) of the previous report

  def __call__(self, step):
    now = time.monotonic()
    if self._last is None:
      self._last = (step, now)
      return
    last_step, last_time = self._last
    if step == last_step or not (step % self._every_steps == 0 or step == self._num_steps
                                 or now - last_time >= self._every_s):
      return
    rate = (step - last_step) / max(now - last_time, 1e-9)
    logging.info('%.1f steps/s, %.1f%% (%d/%d), ETA: %s', rate, 100 * step / self._num_steps,
                 step, self._num_steps, _duration((self._num_steps - step) / rate))
    self._writer.write_scalars(step, {'steps_per_sec': rate, 'uptime': now - self._t0})
    self._last = (step, now)
