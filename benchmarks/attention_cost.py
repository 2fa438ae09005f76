"""The DiT's train step with each attention (`model.attention`), measured side by side in one process.

For every DiT width (`--sizes`), token count (`--tokens`) and loss (`--losses`), each attention's
compiled train step: XLA's memory analysis (peak = arguments + temporaries + outputs − what the
donated state aliases), relative to fm's with the same attention and to the other attention's;
with --time, the median step time (every step compiled first, then stepped round-robin, so drift
of the machine falls on all alike; with --one_loss_at_a_time only one loss's steps, with each
attention, at a time, so that only their states need fit in memory) and, on a GPU, the model FLOPs utilisation: the FLOPs XLA counts
in the step with 'xla' attention (the model's arithmetic: XLA counts a loop's body once, so the
blockwise step's own count would miss its blocks) over the step time and the chip's peak
(`PEAK_TFLOPS`, or --peak_tflops). Memory needs compilation only: nothing is allocated for a
configuration that is not timed. Prints Markdown; --results writes it into benchmarks/RESULTS.md
after every case (a run stopped by --budget_s or from outside leaves what it measured).

The network is configs/fm_celeba64.py's DiT at patch 2 on (2·√tokens)² px images (celeb_a is
resized to any size; 256 tokens are DiT-XL/2's at 256 px, 1024 its tokens at 512 px), diag_fraction
0.75, unconditional.

  python benchmarks/attention_cost.py --sizes B --tokens 256,1024,4096 --batch 8 --results
  python benchmarks/attention_cost.py --sizes B --tokens 256,1024 --batch 1 --time --results
  python benchmarks/attention_cost.py --sizes XL --tokens 256 --dtype bfloat16 --batch 32 \\
      --time --one_loss_at_a_time --results   # as benchmarks/gpu.sh runs it

--layers instead measures one attention layer alone, for each block size of --blocks: the gradient
of a loss of its value (fm's backward) and of a loss of its value and tangent (lsd's, lmd's), at the
(tokens, heads, channels) of the networks' attention layers; what sets attention.BLOCK.

  python benchmarks/attention_cost.py --layers --blocks 64,128,256,512 --results
"""
import argparse
import concurrent.futures
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time

import jax
import numpy as np

from flowmap_jax import config_io
from flowmap_jax import models
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax.models import attention as attention_lib

HERE = os.path.dirname(os.path.abspath(__file__))

# Dense bfloat16 tensor-core peak of one chip, TFLOP/s, by a name in `device_kind` (the vendors'
# data sheets; SXM parts). The first name found in the device's kind is used.
PEAK_TFLOPS = {'GH200': 989.0, 'H200': 989.0, 'H100 PCIe': 756.0, 'H100': 989.0, 'H800': 989.0,
               'B200': 2250.0, 'A100': 312.0, 'A800': 312.0, 'L40S': 362.0, 'L4': 121.0,
               'TPU v4': 275.0, 'TPU v5 lite': 197.0, 'TPU v5': 459.0, 'TPU v6': 918.0}


def config_for(size, tokens, loss, attention, args):
  grid = math.isqrt(tokens)
  if grid * grid != tokens:
    raise SystemExit(f'--tokens {tokens} is not a square: the DiT sees a grid of patches.')
  c = config_io.load('configs/fm_celeba64.py')
  c.model.name = 'dit'
  c.model.dit.size, c.model.dit.patch_size = size, 2
  c.model.dtype, c.model.remat, c.model.attention = args.dtype, args.remat, attention
  c.data.image_size, c.data.batch_size = 2 * grid, args.batch
  c.loss.name, c.loss.diag_fraction = loss, args.diag_fraction
  return c


def batch_shapes(exp, args):
  return {'image': jax.ShapeDtypeStruct((args.batch,) + exp.data_shape, np.uint8),
          'label': jax.ShapeDtypeStruct((args.batch,), np.int32)}


def compile_case(case, args):
  """One configuration's compiled step, its memory analysis and its compile time (nothing
  allocated)."""
  size, tokens, loss, attention = case
  exp = state_lib.Experiment(config_for(size, tokens, loss, attention, args))
  state = exp.abstract_state()
  teacher = state.params if exp.loss.needs_teacher else None
  t0 = time.time()
  lowered = step_lib.jit_train_step(exp, teacher_lib.velocity_fn(exp)).lower(
      state, batch_shapes(exp, args), teacher)
  flops = (lowered.cost_analysis() or {}).get('flops', float('nan')) if attention == 'xla' else None
  compiled = lowered.compile()
  m = compiled.memory_analysis()
  peak = (m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes) if m else float('nan')
  return {'exp': exp, 'compiled': compiled, 'peak': peak, 'flops': flops,
          'compile': time.time() - t0}


def model_flops(size, tokens, loss, args):
  """FLOPs XLA counts in the step with 'xla' attention (lowered only, not compiled)."""
  exp = state_lib.Experiment(config_for(size, tokens, loss, 'xla', args))
  state = exp.abstract_state()
  teacher = state.params if exp.loss.needs_teacher else None
  lowered = step_lib.jit_train_step(exp, teacher_lib.velocity_fn(exp)).lower(
      state, batch_shapes(exp, args), teacher)
  return (lowered.cost_analysis() or {}).get('flops', float('nan'))


_INIT = {}   # (size, tokens): the jitted network initialisation every loss's case shares


def stepper(case, row, args):
  """Allocates the case's state, teacher and batch; returns step(), one step's wall time. The
  network is initialised by one compiled function per (size, tokens), not one per case (on a GPU
  an XL initialisation compiles for seconds), and the state is built from copies of its
  parameters, since the step donates it."""
  exp = row['exp']
  init = _INIT.setdefault(case[:2], jax.jit(exp.init_params))
  state = exp.state_from_params(init(state_lib.base_keys(exp.config.seed)[0]),
                                state_lib.base_keys(exp.config.seed)[1])
  state = jax.device_put(jax.tree.map(jax.numpy.copy, state), exp.state_shardings())
  teacher = init(jax.random.key(1)) if exp.loss.needs_teacher else None
  rng = np.random.RandomState(0)
  batch = {'image': rng.randint(0, 256, (args.batch,) + exp.data_shape).astype(np.uint8),
           'label': np.zeros((args.batch,), np.int32)}
  carry = {'state': state}

  def step():
    t = time.perf_counter()
    carry['state'], _ = row['compiled'](carry['state'], batch, teacher)  # the old state is donated
    jax.block_until_ready(carry['state'])
    return time.perf_counter() - t

  return step


def measure(cases, args, deadline, report):
  """Compiles every case (--compile_threads at a time), then times those asked for, round-robin
  (--one_loss_at_a_time: one loss's cases at a time, their states freed before the next loss's are
  allocated), until `deadline`
  (time.time()); a case that fails (out of memory) records why. `report(rows)` is called after
  every case, so a run stopped from outside still leaves what it measured."""
  rows = {case: {'error': '—'} for case in cases}
  with concurrent.futures.ThreadPoolExecutor(args.compile_threads) as pool:
    futures = {case: pool.submit(compile_case, case, args) for case in cases}
    for case, future in futures.items():
      if future.cancelled():
        continue
      try:
        rows[case] = future.result()
        print(f'compiled {case}: {rows[case]["peak"] / 2**30:.2f} GiB, '
              f'{rows[case]["compile"]:.0f} s', flush=True)
      except Exception as e:  # pylint: disable=broad-except
        rows[case] = {'error': _short(e)}
        print(f'{case}: {rows[case]["error"]}', flush=True)
      report(rows)
      if time.time() > deadline:
        for rest in futures.values():
          rest.cancel()
  if not args.time:
    return rows
  timed = [case for case in cases if 'error' not in rows[case]]
  groups = ([[c for c in timed if c[:3] == key] for key in dict.fromkeys(c[:3] for c in timed)]
            if args.one_loss_at_a_time else [timed])
  for group in groups:
    steps = {}
    for case in group:
      if time.time() > deadline:
        break
      try:
        steps[case] = stepper(case, rows[case], args)
        steps[case]()  # the first step also loads the program onto the device
      except Exception as e:  # pylint: disable=broad-except
        rows[case]['error'] = _short(e)
        steps.pop(case, None)
        print(f'{case}: {rows[case]["error"]}', flush=True)
    times = {case: [] for case in steps}
    for i in range(args.warmup + args.repeats):
      if time.time() > deadline:
        break
      for case, step in steps.items():
        dt = step()
        if i >= args.warmup:
          times[case].append(dt)
    for case, ts in times.items():
      if ts:
        rows[case]['time'] = statistics.median(ts)
        rows[case]['rounds'] = len(ts)
        print(f'timed {case}: {rows[case]["time"] * 1e3:.1f} ms', flush=True)
    del steps  # frees the group's states before the next group allocates its own
    report(rows)
  return rows


def _short(e):
  text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  if 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower():
    return 'out of memory'
  return text[:120]


def peak_tflops(args):
  if args.peak_tflops:
    return args.peak_tflops
  kind = jax.devices()[0].device_kind
  for name, tflops in PEAK_TFLOPS.items():
    if name in kind:
      return tflops
  return None


def table(rows, cases, args):
  """One Markdown row per (size, tokens, loss): each attention's peak, ÷ fm, and (timed) step time
  and MFU; the last columns compare the two attentions."""
  attentions = args.attentions
  peak_of = lambda r: r.get('peak') if r and 'error' not in r else None
  gib = lambda b: f'{b / 2**30:.2f} GiB' if b is not None else '—'
  peak = peak_tflops(args)
  head = ['DiT', 'tokens', 'loss']
  for a in attentions:
    head += [f'{a}: peak', f'{a}: ÷ fm'] + ([f'{a}: step', f'{a}: MFU'] if args.time else [])
  if len(attentions) == 2:
    head += [f'{attentions[1]} ÷ {attentions[0]}: peak'] + (['step'] if args.time else [])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  keys = sorted({c[:3] for c in cases}, key=lambda k: (args.sizes.index(k[0]), k[1],
                                                        args.losses.index(k[2])))
  for size, tokens, loss in keys:
    cells = [f'{size}/2', str(tokens), loss]
    flops = None
    for a in attentions:
      r = rows.get((size, tokens, loss, a), {})
      fm = rows.get((size, tokens, 'fm', a), {})
      p, p_fm = peak_of(r), peak_of(fm)
      cells += [gib(p) if 'error' not in r else r['error'],
                f'{p / p_fm:.2f}×' if p is not None and p_fm else '—']
      if args.time:
        flops = flops or rows.get((size, tokens, loss, 'xla'), {}).get('flops') or r.get('model_flops')
        t = r.get('time')
        cells.append(f'{t * 1e3:.1f} ms' if t else '—')
        cells.append(f'{flops / t / (peak * 1e12):.1%}' if t and flops and peak else '—')
    if len(attentions) == 2:
      r0, r1 = (rows.get((size, tokens, loss, a), {}) for a in attentions)
      p0, p1 = peak_of(r0), peak_of(r1)
      cells.append(f'{p1 / p0:.2f}×' if p0 and p1 else '—')
      if args.time:
        t0, t1 = r0.get('time'), r1.get('time')
        cells.append(f'{t1 / t0:.2f}×' if t0 and t1 else '—')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def machine():
  device = jax.devices()[0]
  return (f'{device.device_kind} ({jax.device_count()} device(s)), '
          f'{platform.processor() or platform.machine()}, jax {jax.__version__}')


def command_line():
  return shlex.join(['python', os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(HERE))]
                    + sys.argv[1:])


def write_results(section, body, path=os.path.join(HERE, 'RESULTS.md')):
  """Replaces (or appends) `## section` of RESULTS.md. (compare_2d.write_results does the same and
  keeps hand-written notes, but importing compare_2d imports the training loop, clu and TensorFlow,
  which a bare GPU machine need not have; this section's notes live in docs/attention.md.)"""
  text = open(path).read() if os.path.exists(path) else '# Benchmark results\n'
  pattern = re.compile(rf'^## {re.escape(section)}\n.*?(?=^## |\Z)', re.S | re.M)
  block = f'## {section}\n\n{body.strip()}\n'
  text = (pattern.sub(lambda _: block + '\n', text) if pattern.search(text)
          else text.rstrip() + '\n\n' + block)
  with open(path, 'w') as f:
    f.write(text)


# (name, tokens, heads, channels per head) of the networks' attention layers.
LAYERS = [('DiT-XL/2, 256 px', 256, 16, 72), ('DiT-XL/2, 512 px', 1024, 16, 72),
          ('DiT-XL/2, 1024 px', 4096, 16, 72), ('DDPM++ at 16×16', 256, 1, 256),
          ('ADM-64 at 32×32', 1024, 3, 64)]


def layer_rows(args):
  """For each layer of LAYERS and each attention ('xla', then blockwise at each of --blocks): the
  compiled gradients of sum(cos O) and of sum(O ⊙ Ȯ) (q, k, v and their tangents random, batch 1),
  XLA's temporaries, and the median time over round-robin rounds."""
  impls = [('xla', attention_lib.xla_attention)] + [
      (f'blockwise {b}', (lambda b: lambda q, k, v: attention_lib.blockwise_attention(q, k, v, b))(b))
      for b in args.blocks]
  of_value = lambda fn: lambda q, k, v, *_: jax.numpy.sum(jax.numpy.cos(fn(q, k, v)))
  def of_tangent(fn):
    def loss(q, k, v, dq, dk, dv):
      o, do = jax.jvp(fn, (q, k, v), (dq, dk, dv))
      return jax.numpy.sum(o * do)
    return loss
  rows, steps = {}, {}
  for name, n, heads, d in LAYERS:
    keys = jax.random.split(jax.random.key(0), 6)
    args_ = [jax.random.normal(k, (1, n, heads, d), jax.numpy.dtype(args.dtype)) for k in keys]
    for impl, fn in impls:
      for kind, loss in (('fm', of_value(fn)), ('jvp', of_tangent(fn))):
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*args_).compile()
        m = compiled.memory_analysis()
        rows[(name, impl, kind)] = {'temp': m.temp_size_in_bytes if m else float('nan')}
        if n <= args.layer_max_time_tokens:
          steps[(name, impl, kind)] = (lambda c, a: lambda: jax.block_until_ready(c(*a)))(
              compiled, args_)
  for step in steps.values():
    step()
  times = {key: [] for key in steps}
  for _ in range(args.repeats):
    for key, step in steps.items():
      t = time.perf_counter()
      step()
      times[key].append(time.perf_counter() - t)
  for key, ts in times.items():
    rows[key]['time'] = statistics.median(ts)
  return rows, [impl for impl, _ in impls]


def layer_table(rows, impls):
  head = ['layer (tokens, heads × channels)', 'gradient of']
  for impl in impls:
    head += [f'{impl}: temp', f'{impl}: time']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name, n, heads, d in LAYERS:
    for kind in ('fm', 'jvp'):
      cells = [f'{name} ({n}, {heads} × {d})', 'loss of O' if kind == 'fm' else 'loss of O, Ȯ']
      base = rows[(name, 'xla', kind)]
      for impl in impls:
        r = rows[(name, impl, kind)]
        cells.append(f'{r["temp"] / 2**20:.0f} MB')
        t = r.get('time')
        cells.append('—' if t is None else f'{t * 1e3:.1f} ms' + (
            f' ({t / base["time"]:.2f}×)' if impl != 'xla' and base.get('time') else ''))
      lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  words = lambda s: s.split(',')
  ap.add_argument('--sizes', type=words, default=['B'], help='DiT sizes, e.g. B,XL')
  ap.add_argument('--tokens', type=lambda s: [int(x) for x in s.split(',')], default=[256, 1024])
  ap.add_argument('--losses', type=words, default=['fm', 'lsd', 'itvm', 'meanflow'])
  ap.add_argument('--attentions', type=words, default=list(models.ATTENTIONS))
  ap.add_argument('--block', type=int, default=0,
                  help=f'keys per block of blockwise attention (0: {attention_lib.BLOCK})')
  ap.add_argument('--dtype', default='float32', help='float32 | bfloat16')
  ap.add_argument('--remat', default='none', help='none | full | dots')
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--diag_fraction', type=float, default=0.75)
  ap.add_argument('--time', action='store_true', help='also run and time every step')
  ap.add_argument('--warmup', type=int, default=1)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--budget_s', type=float, default=0,
                  help='stop compiling and timing after this many seconds (0: no limit); what '
                  'is left is reported as not measured')
  ap.add_argument('--compile_threads', type=int, default=1)
  ap.add_argument('--one_loss_at_a_time', action='store_true',
                  help="time one loss's steps at a time (every case's state at once need not fit)")
  ap.add_argument('--peak_tflops', type=float, default=0, help="the chip's peak (0: PEAK_TFLOPS)")
  ap.add_argument('--results', action='store_true', help='write the table into RESULTS.md')
  ap.add_argument('--no_fm_reference', action='store_true',
                  help='do not add fm to --losses (a run split in two: the ÷ fm columns stay empty)')
  ap.add_argument('--label', default='', help='added to the RESULTS.md section name')
  ap.add_argument('--layers', action='store_true', help='one attention layer per block size')
  ap.add_argument('--blocks', type=lambda s: [int(x) for x in s.split(',')],
                  default=[64, 128, 256, 512])
  ap.add_argument('--layer_max_time_tokens', type=int, default=1024,
                  help='--layers: time layers of at most this many tokens (memory: all)')
  args = ap.parse_args()
  if args.layers:
    start = time.time()
    rows, impls = layer_rows(args)
    text = (f'One attention layer, batch 1, {args.dtype}: XLA\'s temporaries of the compiled '
            'gradient (q, k, v) of sum(cos O) (fm\'s backward) and of sum(O ⊙ Ȯ) (a loss of the '
            f'tangent: lsd\'s, lmd\'s), and its median time over {args.repeats} round-robin '
            f'rounds (layers of at most {args.layer_max_time_tokens} tokens), × against xla. '
            f'{machine()}; {time.time() - start:.0f} s in all.\n\n' + layer_table(rows, impls))
    print(text)
    if args.results:
      write_results(f'Attention cost: one layer by block size, {args.dtype} (attention_cost.py, '
                    f'{jax.devices()[0].platform})', f'Command: `{command_line()}`\n\n{text}')
    return
  unknown = sorted(set(args.attentions) - set(models.ATTENTIONS))
  if unknown:
    raise SystemExit(f'--attentions {unknown}: known are {models.ATTENTIONS}.')
  if 'fm' not in args.losses and not args.no_fm_reference:
    args.losses = ['fm'] + args.losses  # the reference of every ratio
  if args.block:
    attention_lib.BLOCK = args.block
  start = time.time()
  deadline = start + args.budget_s if args.budget_s else float('inf')
  cases = [(s, n, l, a) for s in args.sizes for n in args.tokens for l in args.losses
           for a in args.attentions]

  def report(rows, final=False):
    """The table of what is measured so far, printed when final, written with --results."""
    if final and args.time and 'xla' not in args.attentions:
      for s, n, l, a in cases:  # the model's FLOPs, for the MFU, from the 'xla' step's lowering
        if rows[(s, n, l, a)].get('time'):
          rows[(s, n, l, a)]['model_flops'] = model_flops(s, n, l, args)
    peak = peak_tflops(args)
    timed = [r['rounds'] for r in rows.values() if r.get('rounds')]
    head = (f'DiT at patch 2, {args.dtype}, remat {args.remat}, batch {args.batch}, diag_fraction '
            f'{args.diag_fraction}, blockwise attention in blocks of {attention_lib.BLOCK} keys. '
            'Peak: XLA\'s memory analysis of the compiled train step (arguments + temporaries + '
            'outputs − aliased donated state), parameters, optimiser state and EMAs included; '
            '÷ fm: against fm\'s step with the same attention.')
    if args.time:
      head += (f' Step: median of {min(timed) if timed else 0}–{max(timed) if timed else 0} '
               + ('round-robin rounds of each loss\'s steps' if args.one_loss_at_a_time
                  else 'round-robin rounds')
               + f' after {args.warmup} warm-up rounds; MFU: the FLOPs XLA counts in the step '
               "with 'xla' attention over step time × "
               + (f'{peak:g} TFLOP/s (the chip\'s dense bf16 peak).' if peak else
                  'the peak, unknown for this chip (--peak_tflops).'))
    if not final:
      head += ' (Interrupted: — marks what was not measured.)'
    elif args.budget_s and time.time() > deadline and any(
        r.get('error') == '—' or (args.time and 'error' not in r and not r.get('time'))
        for r in rows.values()):
      head += f' The {args.budget_s:.0f} s budget ran out: — marks what was not measured.'
    head += f' {machine()}; {time.time() - start:.0f} s in all.'
    text = head + '\n\n' + table(rows, cases, args)
    if final:
      print(text)
    if args.results:
      platform_name = jax.devices()[0].platform
      kind = f', {jax.devices()[0].device_kind}' if platform_name != 'cpu' else ''
      section = (f'Attention cost: DiT-{"/".join(args.sizes)}, {args.dtype}, '
                 f'{",".join(map(str, args.tokens))} tokens, {",".join(args.losses)}'
                 f'{", timed" if args.time else ""}{", " + args.label if args.label else ""} '
                 f'(attention_cost.py, {platform_name}{kind})')
      write_results(section, f'Command: `{command_line()}`\n\n{text}')

  report(measure(cases, args, deadline, report), final=True)


if __name__ == '__main__':
  main()
