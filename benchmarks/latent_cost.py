"""What a latent ImageNet train step costs per device: XLA's memory and FLOP analyses of the
compiled step of configs/{fm,itvm,lsd,meanflow}_imagenet{256,512}.py (DiT-XL/2) on a simulated
8-device mesh.

Nothing runs and nothing is read from disk: the state, the teacher's parameters and the batch are
abstract (`jax.ShapeDtypeStruct`s with the run's shardings: the state by the FSDP rule of
`Experiment.state_shardings`, the batch {'latent': float32 (B, h, w, c), 'label': int32 (B,)} split
over every device), `jit_train_step(...).lower(...).compile()` compiles the step train.py runs, and
each case is one JSON line of its compiled executable's analyses:
- `memory_analysis()` of one device's program: argument bytes (state, batch, teacher), output bytes
  (new state, metrics), alias bytes (outputs written into donated arguments: the state) and temp
  bytes (XLA's buffer assignment of every intermediate, buffers with disjoint live ranges sharing
  memory); peak = argument + output + temp − alias, the bytes allocated at once;
- `cost_analysis()['flops']`: per device (the SPMD-partitioned module one device runs; `--report`
  checks 8 × it against the analytic count of fm's global step). XLA counts a loop's body once, so
  the FLOPs of 'blockwise' attention (a scan over key blocks) are under-counted: by half of the
  attention's at 256 tokens, by 7/8 at 1024 (benchmarks/RESULTS.md has the measured factors).
The teacher of itvm is its config's (configs/fm_imagenet{res}.py, DiT-XL/2 at bfloat16, guidance
from the student's teacher.guidance), built as train.py builds it: `Experiment` of the teacher
config with the student's data block, its parameters sharded by the teacher config's own mesh.
`--residuals` adds, per case, what autodiff keeps for the backward (the residuals of `jax.vjp` of
the loss at the per-device batch, traced only), the backend-independent side of `model.remat`.

These are analyses by XLA's CPU backend (fake devices, `--xla_force_host_platform_device_count=8`)
of the same program; buffer assignment, scheduling and fusion on a GPU or TPU differ, so the peaks
are estimates (with remat, pessimistic ones: RESULTS.md). One process compiles the cases its
arguments name, one after another, and appends to --out, skipping the cases already there (a sweep
survives a kill: rerun the same command):

  nice -n 10 python benchmarks/latent_cost.py --loss fm,itvm,lsd,meanflow --resolution 256,512 \
      --remat none,full --mesh data,fsdp --out /work/logs/latent_cost.jsonl
  python benchmarks/latent_cost.py --residuals --loss fm,itvm,lsd,meanflow --resolution 256,512 \
      --remat none,full --out /work/logs/latent_cost.jsonl
  python benchmarks/latent_cost.py --report --out /work/logs/latent_cost.jsonl   # the table
"""
import argparse
import datetime
import json
import os
import platform
import sys
import time

# XLA:CPU's default HLO scheduler orders for concurrency and ignores memory: with it model.remat
# saved nothing in the estimate (fm 256 px, 'xla' attention: 52.1 GB per device without remat, 52.6
# GB with 'full'); the memory-minimising scheduler, the default here, gives 44.2 and 32.8 GB.
# Backend optimisation level 0 (LLVM's) left both analyses unchanged on DiT-S and compiles faster.
SCHEDULERS = {'memory': '--xla_cpu_enable_concurrency_optimized_scheduler=false',
              'concurrency': '--xla_cpu_enable_concurrency_optimized_scheduler=true'}


def _scheduler_arg(argv):
  for i, a in enumerate(argv):
    if a.startswith('--scheduler='):
      return a.split('=', 1)[1]
    if a == '--scheduler' and i + 1 < len(argv):
      return argv[i + 1]
  return 'memory'


if __name__ == '__main__':  # before JAX is imported: 8 CPU devices for the mesh
  os.environ['XLA_FLAGS'] = ' '.join([
      os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=8',
      '--xla_backend_optimization_level=0', SCHEDULERS[_scheduler_arg(sys.argv)]]).strip()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from flowmap_jax import config_io
from flowmap_jax import parallel
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax.models import attention as attention_lib
from flowmap_jax.models import dit

LOSSES = ('fm', 'itvm', 'lsd', 'meanflow')
MESHES = {'data': (8, 1), 'fsdp': (1, 8)}   # (mesh.data, mesh.fsdp)
MEMORIES_GB = (16, 32, 80, 141)              # accelerator memories per chip, GB (10⁹ bytes)
DTYPES = {'float32': 'f32', 'bfloat16': 'bf16'}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_for(loss, resolution, remat, mesh, attention=None, dit_size=None, batch=None):
  """configs/<loss>_imagenet<resolution>.py with model.remat, the mesh and (optionally) the
  attention, DiT size and global batch changed; data.vae and data.path are left empty (nothing is
  read)."""
  c = config_io.load(os.path.join(ROOT, f'configs/{loss}_imagenet{resolution}.py'))
  c.model.remat = remat
  if attention:
    c.model.attention = attention
  if dit_size:
    c.model.dit.size = dit_size
  if batch:
    c.data.batch_size = batch
  c.mesh.data, c.mesh.fsdp = MESHES[mesh]
  return c


def teacher_of(config, mesh=None):
  """(teacher Experiment, abstract teacher parameters) as train.py builds them for a student with
  no teacher checkpoint: teacher.config with the student's data block (teacher.config_of), on the
  mesh of the teacher config's own mesh block (train.py), or on `mesh` (--teacher_mesh student)."""
  tconfig = config_io.load(os.path.join(ROOT, config.teacher.config))
  with tconfig.unlocked():
    tconfig.data = config.data
    tconfig.model.dit.size = config.model.dit.size   # --dit_size: the teacher of a small check
  texp = state_lib.Experiment(tconfig, mesh=mesh)
  return texp, state_lib.slowest_ema(texp.abstract_state().eval_emas)


def param_count(exp):
  shapes = jax.eval_shape(exp.init_params, jax.random.key(0))
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes)))


def per_device_bytes(tree):
  """Bytes of one device's shards of a tree of ShapeDtypeStructs with shardings."""
  return int(sum(np.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize
                 for a in jax.tree.leaves(tree)))


def analytic_fm_flops(exp):
  """Matmul FLOPs of one fm step of a DiT over the global batch: forward 2·(12 D² per token per
  block + 4 N D per block for q kᵀ and P v) + patch embedding and final layer per token, per-example
  conditioning; the backward twice the forward (3× in all). Elementwise work is not counted."""
  c = exp.config
  width, depth, _ = dit.SIZES[c.model.dit.size]
  h, w, ch = exp.data_shape
  p = c.model.dit.patch_size
  n = (h // p) * (w // p)
  per_token = depth * 2 * 12 * width ** 2 + 2 * 2 * p * p * ch * width
  attention = depth * 2 * 2 * n * n * width
  cond = depth * 2 * 6 * width ** 2 + 2 * 2 * width ** 2 + 2 * 2 * width ** 2  # adaLN, final, MLPs
  forward = n * per_token + attention + cond
  return 3 * forward * c.data.batch_size


def measure(loss, resolution, remat, mesh_name, attention, args):
  c = config_for(loss, resolution, remat, mesh_name, attention, args.dit_size, args.batch)
  exp = state_lib.Experiment(c)
  mesh = exp.mesh
  state = exp.abstract_state()
  teacher, velocity, tdesc = None, None, ''
  if exp.loss.needs_teacher:
    texp, teacher = teacher_of(c, mesh if args.teacher_mesh == 'student' else None)
    velocity = teacher_lib.velocity_fn(texp, c.teacher.guidance)
    tdesc = (f'{c.teacher.config}: DiT-{texp.config.model.dit.size}/'
             f'{texp.config.model.dit.patch_size} {texp.config.model.dtype}, guidance '
             f'{c.teacher.guidance}, mesh data={texp.mesh.shape["data"]} '
             f'fsdp={texp.mesh.shape["fsdp"]}')
  b = c.data.batch_size
  sharding = parallel.batch_sharding(mesh)
  batch = {'latent': jax.ShapeDtypeStruct((b,) + exp.data_shape, jnp.float32, sharding=sharding),
           'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}
  t0 = time.time()
  lowered = step_lib.jit_train_step(exp, velocity).lower(state, batch, teacher)
  t1 = time.time()
  compiled = lowered.compile()
  t2 = time.time()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
            'temp_size_in_bytes', 'generated_code_size_in_bytes',
            'host_argument_size_in_bytes', 'host_output_size_in_bytes', 'host_alias_size_in_bytes',
            'host_temp_size_in_bytes')
  m = {f.replace('_size_in_bytes', ''): int(getattr(mem, f, 0) or 0) for f in fields}
  return dict(
      loss=loss, resolution=resolution, remat=remat, mesh=mesh_name, attention=attention or
      c.model.get('attention', 'xla'), dit=f'{c.model.dit.size}/{c.model.dit.patch_size}',
      dtype=c.model.dtype, latent_shape=list(exp.data_shape),
      tokens=(exp.data_shape[0] // c.model.dit.patch_size) ** 2, global_batch=b,
      per_device_batch=b // jax.device_count(), diag_fraction=float(c.loss.diag_fraction),
      params=param_count(exp), teacher=tdesc, memory=m,
      peak=m['argument'] + m['output'] + m['temp'] - m['alias'],
      flops=float(cost.get('flops', -1)), transcendentals=float(cost.get('transcendentals', -1)),
      bytes_accessed=float(cost.get('bytes accessed', -1)),
      analytic_fm_flops=analytic_fm_flops(exp), state_per_device=per_device_bytes(state),
      teacher_per_device=per_device_bytes(teacher),
      lower_s=round(t1 - t0, 1), compile_s=round(t2 - t1, 1),
      block=None if c.model.get('attention', 'xla') == 'xla' else attention_lib.BLOCK,
      scheduler=args.scheduler, teacher_mesh=args.teacher_mesh,
      xla_flags=os.environ.get('XLA_FLAGS', ''), jax=jax.__version__,
      date=datetime.date.today().isoformat(), host=platform.machine())


def residual_bytes(loss, resolution, remat, attention):
  """Bytes of what autodiff keeps for the backward of one device's step (the residuals of `jax.vjp`
  of the loss at the per-device batch, parameters included, as benchmarks/step_cost.py counts them):
  traced on a 1-device mesh, nothing compiled, so independent of any backend's scheduler."""
  c = config_for(loss, resolution, remat, 'data', attention)
  c.data.batch_size //= 8
  c.mesh.data, c.mesh.fsdp = 1, 1
  mesh = jax.make_mesh((1, 1), ('data', 'fsdp'), devices=jax.devices()[:1],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  exp = state_lib.Experiment(c, mesh=mesh)
  state = exp.abstract_state()
  b = c.data.batch_size
  batch = {'latent': jax.ShapeDtypeStruct((b,) + exp.data_shape, jnp.float32),
           'label': jax.ShapeDtypeStruct((b,), jnp.int32)}
  teacher = velocity = None
  if exp.loss.needs_teacher:
    texp, teacher = teacher_of(c)
    teacher = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), teacher)
    velocity = teacher_lib.velocity_fn(texp, c.teacher.guidance)

  def vjp_fn(state, batch, teacher):
    loss_of = step_lib.loss_of_params(exp, state, batch, teacher, velocity)
    if exp.learned_weighting:
      return jax.vjp(loss_of, state.params, state.weighting['params'], has_aux=True)[1]
    return jax.vjp(loss_of, state.params, has_aux=True)[1]
  leaves = jax.tree.leaves(jax.eval_shape(vjp_fn, state, batch, teacher))
  return int(sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves))


def key(r):
  return (r['loss'], r['resolution'], r['remat'], r['mesh'], r['attention'], r['dit'],
          r['global_batch'], r.get('scheduler', 'concurrency'), r.get('teacher_mesh', 'own'),
          r.get('block'))


def residuals_path(out):
  return os.path.splitext(out)[0] + '.residuals.jsonl'


def read(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def fits(peak):
  """The memories of MEMORIES_GB the peak fits (GB of 10⁹ bytes), or 'none'."""
  ok = [str(g) for g in MEMORIES_GB if peak <= g * 1e9]
  return ', '.join(ok) if ok else 'none'


def report(rows, residuals=()):
  """The Markdown table of the XL rows at the configs' batch measured with the memory-minimising
  scheduler and the teacher on its own mesh, and the lines checking XLA's FLOPs against the
  analytic count of fm."""
  kept = {tuple(r['case']): r['bytes'] for r in residuals}
  rows = [r for r in rows if r['dit'] == 'XL/2' and r['global_batch'] == 256
          and r.get('scheduler') == 'memory' and r.get('teacher_mesh', 'own') == 'own']
  rows = list({key(r): r for r in rows}.values())   # a case measured twice: its latest row
  # A blockwise row of an older key block (models/attention.BLOCK changed while the sweep ran) only
  # where the case has no row at today's block.
  case = lambda r: (r['loss'], r['resolution'], r['remat'], r['mesh'], r['attention'])
  current = {case(r) for r in rows if r.get('block') in (None, attention_lib.BLOCK)}
  rows = [r for r in rows
          if r.get('block') in (None, attention_lib.BLOCK) or case(r) not in current]
  gb = lambda n: f'{n / 1e9:.1f}'
  lines = ['| loss | px (tokens) | mesh | remat | attention | dtype | argument | output | alias | '
           'temp | **peak** | fits (GB) | kept for backward | TFLOP | FLOPs / fm | compile |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  order = lambda r: (r['resolution'], r['mesh'], LOSSES.index(r['loss']),
                     ['none', 'dots', 'full'].index(r['remat']), r['attention'], -(r['block'] or 0))
  rows = sorted(rows, key=order)
  # FLOPs / fm: against fm at the same resolution, remat and attention (XLA under-counts blockwise
  # attention, so like is compared with like); at 256 px, where that is 2 %, any fm of that remat.
  fm = {}
  for r in rows:
    if r['loss'] == 'fm':
      fm.setdefault((r['resolution'], r['remat'], r['attention'], r.get('block')), r)
      fm.setdefault((r['resolution'], r['remat']), r)
  for r in rows:
    m = r['memory']
    ref = fm.get((r['resolution'], r['remat'], r['attention'], r.get('block')),
                 fm.get((r['resolution'], r['remat'])) if r['resolution'] == 256 else None)
    ratio = f'{r["flops"] / ref["flops"]:.2f}×' if ref else ''
    k = kept.get((r['loss'], r['resolution'], r['remat'], r['attention'], r.get('block')))
    lines.append(
        f'| {r["loss"]} | {r["resolution"]} ({r["tokens"]}) | {r["mesh"]} | {r["remat"]} | '
        f'{r["attention"]}{" " + str(r["block"]) if r.get("block") else ""} | '
        f'{DTYPES.get(r["dtype"], r["dtype"])} | '
        f'{gb(m["argument"])} | {gb(m["output"])} | {gb(m["alias"])} | {gb(m["temp"])} | '
        f'**{gb(r["peak"])}** | {fits(r["peak"])} | {gb(k) if k else ""} | '
        f'{r["flops"] / 1e12:.1f} | {ratio} | {r["compile_s"]:.0f} s |')
  checks = []
  for r in rows:
    if r['loss'] == 'fm' and r['remat'] == 'none':
      checks.append(f'fm {r["resolution"]} px, {r["mesh"]}, {r["attention"]}: XLA '
                    f'{r["flops"] / 1e12:.2f} TFLOP per device, analytic '
                    f'{r["analytic_fm_flops"] / 1e12:.1f} TFLOP for the global batch '
                    f'(8 × XLA / analytic = {8 * r["flops"] / r["analytic_fm_flops"]:.3f})')
  return '\n'.join(lines), checks


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--loss', default='fm', help='comma list of ' + ','.join(LOSSES))
  ap.add_argument('--resolution', default='256', help='comma list of 256, 512')
  ap.add_argument('--remat', default='none', help='comma list of none, full, dots')
  ap.add_argument('--mesh', default='data', help='comma list of data (8×1), fsdp (1×8)')
  ap.add_argument('--attention', default='', help="comma list; '' = the config's")
  ap.add_argument('--dit_size', default='', help="'' = the config's (XL); S for a quick check")
  ap.add_argument('--batch', type=int, default=0, help='global batch (0 = the config\'s, 256)')
  ap.add_argument('--scheduler', default='memory', choices=sorted(SCHEDULERS),
                  help="XLA:CPU's HLO scheduler: memory-minimising, or its default (concurrency)")
  ap.add_argument('--teacher_mesh', default='own', choices=('own', 'student'),
                  help="the teacher's parameters on its config's mesh (train.py) or the student's")
  ap.add_argument('--out', default='/work/logs/latent_cost.jsonl')
  ap.add_argument('--report', action='store_true', help='print the table of --out and exit')
  ap.add_argument('--residuals', action='store_true',
                  help='trace what autodiff keeps for the XL rows of --out of --loss, '
                       '--resolution and --remat (on one device at the per-device batch), into '
                       '--out with the suffix .residuals.jsonl')
  args = ap.parse_args()
  if args.report:
    table, checks = report(read(args.out), read(residuals_path(args.out)))
    print(table + '\n\n' + '\n'.join(checks))
    return
  if args.residuals:
    done = {tuple(r['case']) for r in read(residuals_path(args.out))}
    for r in read(args.out):
      block = None if r['attention'] == 'xla' else attention_lib.BLOCK
      case = (r['loss'], r['resolution'], r['remat'], r['attention'], block)
      if (r['dit'] != 'XL/2' or r['global_batch'] != 256 or case in done or r['block'] != block
          or r['loss'] not in args.loss.split(',') or str(r['resolution']) not in
          args.resolution.split(',') or r['remat'] not in args.remat.split(',')):
        continue
      done.add(case)
      t = time.time()
      n = residual_bytes(*case[:4])
      with open(residuals_path(args.out), 'a') as f:
        f.write(json.dumps({'case': case, 'bytes': n}) + '\n')
      print(case, f'{n / 1e9:.2f} GB kept for backward ({time.time() - t:.0f} s)', flush=True)
    return
  assert jax.device_count() == 8, jax.devices()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for loss in args.loss.split(','):
    for res in [int(x) for x in args.resolution.split(',')]:
      for remat in args.remat.split(','):
        for mesh in args.mesh.split(','):
          for attention in args.attention.split(','):
            c = config_for(loss, res, remat, mesh, attention or None, args.dit_size or None,
                           args.batch or None)
            want_attention = attention or c.model.get('attention', 'xla')
            want = (loss, res, remat, mesh, want_attention,
                    f'{c.model.dit.size}/{c.model.dit.patch_size}', c.data.batch_size,
                    args.scheduler, args.teacher_mesh,
                    None if want_attention == 'xla' else attention_lib.BLOCK)
            if want in {key(r) for r in read(args.out)}:
              print('measured already:', want, flush=True)
              continue
            print('compiling', want, flush=True)
            r = measure(loss, res, remat, mesh, attention or None, args)
            with open(args.out, 'a') as f:
              f.write(json.dumps(r) + '\n')
            print(f'  peak {r["peak"] / 1e9:.2f} GB/device, {r["flops"] / 1e12:.2f} TFLOP, '
                  f'lower {r["lower_s"]} s, compile {r["compile_s"]} s', flush=True)


if __name__ == '__main__':
  main()
