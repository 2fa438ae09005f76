"""Stand-ins for SLURM's sbatch, srun, scontrol and scancel in tests/test_launch.py: a job's nodes
are this machine, its tasks local processes with the variables SLURM gives them.

  $FAKE_SLURM_STATE/jobs/ID/spec.json     the job's options (#SBATCH lines, then the command line)
  $FAKE_SLURM_STATE/jobs/ID/batch.pid     the running batch script; tasks/PROCID.pid its tasks
  $FAKE_SLURM_STATE/jobs/ID/time_limit    written by a test: the job is `sig_time` seconds from its
                                          time limit now, so --signal's signal goes out (to every
                                          task, or only the batch shell with B:), or, without
                                          --signal, the limit itself (SIGTERM, SIGKILL 30 s later)

sbatch options and their values are checked against the documented forms (OPTIONS); one it does not
know exits 1 with "unrecognized option", as sbatch does. Node k is `localhost` (k = 0) or
127.0.0.(k+1): every name reaches this machine, and JAX's SLURM detection takes the first as the
coordinator, on the port it derives from the job id (so ids are picked with that port free).
"""
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

STATE = os.path.join(os.environ.get('FAKE_SLURM_STATE') or sys.exit('FAKE_SLURM_STATE unset'), 'jobs')
KILL_WAIT = float(os.environ.get('FAKE_SLURM_KILL_WAIT', '30'))   # slurm.conf KillWait default
SIGNALS = {s.name[3:]: s for s in signal.Signals if s.name.startswith('SIG') and '_' not in s.name}

_TIME = r'(\d+|\d+:\d\d|\d+:\d\d:\d\d|\d+-\d+|\d+-\d+:\d\d|\d+-\d+:\d\d:\d\d)'
# sbatch(1): option -> value pattern (None: a flag without a value).
OPTIONS = {
    '--job-name': r'.+', '--nodes': r'\d+(-\d+)?', '--ntasks': r'\d+', '--ntasks-per-node': r'\d+',
    '--gpus-per-node': r'([\w.-]+:)?\d+', '--gpus': r'([\w.-]+:)?\d+', '--gres': r'.+',
    '--cpus-per-task': r'\d+', '--mem': r'\d+[KMGT]?', '--time': _TIME,
    '--signal': r'((R|B|RB|BR):)?(SIG)?[A-Z0-9]+(@\d+)?', '--requeue': None, '--no-requeue': None,
    '--open-mode': r'append|truncate', '--output': r'.+', '--error': r'.+', '--partition': r'.+',
    '--account': r'.+', '--qos': r'.+', '--constraint': r'.+', '--exclusive': None,
    '--export': r'.+', '--chdir': r'.+', '--wait': None,
}
SHORT = {'-J': '--job-name', '-N': '--nodes', '-n': '--ntasks', '-c': '--cpus-per-task',
         '-t': '--time', '-o': '--output', '-e': '--error', '-p': '--partition', '-A': '--account',
         '-C': '--constraint', '-D': '--chdir', '-W': '--wait'}
# srun(1) options the launchers use.
SRUN_OPTIONS = {'--kill-on-bad-exit': r'[01]', '--label': None, '--gpu-bind': r'none|closest|'
                r'single:\d+|per_task:\d+|map_gpu:[\d,]+|mask_gpu:[\dx,]+',
                '--ntasks': r'\d+', '--nodes': r'\d+', '--cpu-bind': r'.+', '--mpi': r'.+'}


def die(tool, message, code=1):
  print(f'{tool}: error: {message}', file=sys.stderr)
  sys.exit(code)


def parse_options(tool, words, known, stop_at_positional=True):
  """{option: value or True}, rest: `--opt=v`, `--opt v`, `-X v` until the first positional."""
  opts, i = {}, 0
  while i < len(words):
    w = words[i]
    if not w.startswith('-') and stop_at_positional:
      break
    name, eq, value = w.partition('=')
    name = SHORT.get(name, name) if tool == 'sbatch' else name
    if name not in known:
      die(tool, f"unrecognized option '{name}'")
    pattern = known[name]
    if pattern is None:
      if eq:
        die(tool, f'option {name} takes no value')
      opts[name] = True
    else:
      if not eq:
        i += 1
        if i >= len(words):
          die(tool, f'option {name} requires a value')
        value = words[i]
      if not re.fullmatch(pattern, value):
        die(tool, f'invalid {name} value {value!r}')
      opts[name] = value
    i += 1
  return opts, words[i:]


def directives(script):
  """The #SBATCH options of a batch script, up to its first command (as sbatch reads them)."""
  words = []
  with open(script) as f:
    for n, line in enumerate(f):
      line = line.strip()
      if n == 0 and line.startswith('#!'):
        continue
      if line.startswith('#SBATCH'):
        words += shlex.split(line[len('#SBATCH'):], comments=True)
      elif line and not line.startswith('#'):
        break
  return words


def job_dir(job_id):
  return os.path.join(STATE, str(job_id))


def read_json(path):
  with open(path) as f:
    return json.load(f)


def pick_job_id():
  """An id whose JAX coordinator port (id % 4096 + 61440, jax/_src/clusters/slurm_cluster.py) is
  free here."""
  for _ in range(200):
    job_id = random.randrange(10_000, 90_000)
    if os.path.exists(job_dir(job_id)):
      continue
    try:
      with socket.socket() as s:
        s.bind(('', job_id % 4096 + 61440))
      return job_id
    except OSError:
      continue
  die('sbatch', 'no free port for a job id')


def node_names(n):
  return ['localhost'] + [f'127.0.0.{k + 1}' for k in range(1, n)]


def sbatch(argv):
  cli, rest = parse_options('sbatch', argv, OPTIONS)
  if not rest:
    die('sbatch', 'a batch script is needed')
  script, args = rest[0], rest[1:]
  opts, _ = parse_options('sbatch', directives(script), OPTIONS)
  opts.update(cli)                       # the command line overrides the script's directives
  nodes = int(str(opts.get('--nodes', '1')).split('-')[0])
  per_node = int(opts.get('--ntasks-per-node', 0)) or max(1, int(opts.get('--ntasks', 1)) // nodes)
  job_id = pick_job_id()
  os.makedirs(os.path.join(job_dir(job_id), 'tasks'))
  spec = dict(id=job_id, script=os.path.abspath(script), args=args, options=opts,
              cwd=os.path.abspath(opts.get('--chdir', os.getcwd())), nodes=nodes,
              tasks_per_node=per_node, env=dict(os.environ))
  with open(os.path.join(job_dir(job_id), 'spec.json'), 'w') as f:
    json.dump(spec, f)
  if '--wait' in opts:
    return run_job(job_id)
  subprocess.Popen([sys.executable, __file__, '_run_job', str(job_id)], start_new_session=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  print(f'Submitted batch job {job_id}')
  return 0


def job_env(spec, restarts):
  o, nodes, per_node = spec['options'], spec['nodes'], spec['tasks_per_node']
  names = node_names(nodes)
  env = dict(spec['env'])
  gpus = re.sub(r'^.*:', '', o.get('--gpus-per-node', ''))
  env.update(
      SLURM_JOB_ID=str(spec['id']), SLURM_JOBID=str(spec['id']),
      SLURM_JOB_NAME=o.get('--job-name', os.path.basename(spec['script'])),
      SLURM_JOB_NODELIST=','.join(names), SLURM_NODELIST=','.join(names),
      SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes),
      SLURM_NTASKS=str(nodes * per_node), SLURM_NPROCS=str(nodes * per_node),
      SLURM_TASKS_PER_NODE=f'{per_node}(x{nodes})' if nodes > 1 else str(per_node),
      SLURM_SUBMIT_DIR=spec['cwd'], SLURM_SUBMIT_HOST='localhost', SLURMD_NODENAME=names[0],
      SLURM_NODEID='0', SLURM_PROCID='0', SLURM_LOCALID='0', FAKE_SLURM_JOB=str(spec['id']))
  if '--ntasks-per-node' in o:
    env['SLURM_NTASKS_PER_NODE'] = str(per_node)
  if '--cpus-per-task' in o:
    env['SLURM_CPUS_PER_TASK'] = o['--cpus-per-task']
  if gpus:
    env.update(SLURM_GPUS_ON_NODE=gpus, SLURM_GPUS_PER_NODE=o['--gpus-per-node'],
               CUDA_VISIBLE_DEVICES=','.join(map(str, range(int(gpus)))))
  if restarts:
    env['SLURM_RESTART_COUNT'] = str(restarts)
  return env


def output_path(spec):
  pattern = spec['options'].get('--output', 'slurm-%j.out')
  name = pattern.replace('%j', str(spec['id'])).replace('%x', spec['options'].get(
      '--job-name', 'job')).replace('%%', '%')
  return os.path.join(spec['cwd'], name)


def task_pids(job_id):
  d = os.path.join(job_dir(job_id), 'tasks')
  pids = []
  for f in os.listdir(d):
    try:
      with open(os.path.join(d, f)) as fh:
        pids.append(int(fh.read()))
    except (OSError, ValueError):
      pass
  return pids


def send(pids, sig):
  for pid in pids:
    try:
      os.kill(pid, sig)
    except ProcessLookupError:
      pass


def run_job(job_id):
  """The job from start to end: the batch script, run again (SLURM_RESTART_COUNT) when requeued."""
  spec = read_json(os.path.join(job_dir(job_id), 'spec.json'))
  d = job_dir(job_id)
  restarts = 0
  while True:
    # A requeued job writes the same file again: appended with --open-mode=append, else truncated.
    mode = 'a' if spec['options'].get('--open-mode') == 'append' else 'w'
    with open(output_path(spec), mode) as out:
      batch = subprocess.Popen(['bash', spec['script'], *spec['args']], cwd=spec['cwd'],
                               env=job_env(spec, restarts), stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    with open(os.path.join(d, 'batch.pid'), 'w') as f:
      f.write(str(batch.pid))
    kill_at = None
    while batch.poll() is None:
      limit = os.path.join(d, 'time_limit')
      if os.path.exists(limit):
        os.remove(limit)
        m = re.fullmatch(r'((R|B|RB|BR):)?(SIG)?([A-Z0-9]+)(@\d+)?',
                         spec['options'].get('--signal', ''))
        if m:   # --signal: sig_time seconds before the limit, to the steps (or the batch shell: B:)
          sig = SIGNALS.get(m.group(4)) or signal.Signals(int(m.group(4)))
          send([batch.pid] if m.group(2) and 'B' in m.group(2) else task_pids(job_id), sig)
        else:   # no --signal: the limit itself, SIGTERM to everything and SIGKILL after KillWait
          send([batch.pid] + task_pids(job_id), signal.SIGTERM)
          kill_at = time.time() + KILL_WAIT
      if os.path.exists(os.path.join(d, 'cancel')) and kill_at is None:
        kill_at = time.time() + KILL_WAIT
      if kill_at is not None and time.time() > kill_at:
        send([batch.pid] + task_pids(job_id), signal.SIGKILL)
      time.sleep(0.1)
    code = batch.returncode if batch.returncode >= 0 else 128 - batch.returncode
    requeue = os.path.join(d, 'requeue')
    if os.path.exists(requeue) and not os.path.exists(os.path.join(d, 'cancel')):
      os.remove(requeue)
      restarts += 1
      continue
    with open(os.path.join(d, 'exit_code'), 'w') as f:
      f.write(str(code))
    return code


def expand(nodelist):
  names = []
  for part in re.findall(r'[^,\[]+(?:\[[^\]]*\])?', nodelist):
    m = re.fullmatch(r'(.*)\[(.*)\]', part)
    if not m:
      names.append(part)
      continue
    for r in m.group(2).split(','):
      lo, _, hi = r.partition('-')
      names += [f'{m.group(1)}{i:0{len(lo)}d}' for i in range(int(lo), int(hi or lo) + 1)]
  return names


def scontrol(argv):
  if argv[:2] == ['show', 'hostnames']:
    print('\n'.join(expand(argv[2] if len(argv) > 2 else os.environ['SLURM_JOB_NODELIST'])))
    return 0
  if argv[:1] == ['requeue'] and len(argv) == 2:
    d = job_dir(argv[1])
    if not os.path.isdir(d):
      die('scontrol', f'Invalid job id specified: {argv[1]}')
    if '--requeue' not in read_json(os.path.join(d, 'spec.json'))['options']:
      die('scontrol', f'Requested operation is presently disabled for job {argv[1]}')
    open(os.path.join(d, 'requeue'), 'w').close()
    return 0
  die('scontrol', f'this stand-in has no `scontrol {" ".join(argv)}`')


def scancel(argv):
  opts, rest = parse_options('scancel', argv, {'--signal': r'(SIG)?[A-Z0-9]+', '--batch': None,
                                                '--full': None})
  if len(rest) != 1:
    die('scancel', 'one job id')
  d = job_dir(rest[0])
  batch = int(open(os.path.join(d, 'batch.pid')).read())
  if '--signal' in opts:   # steps only, unless --batch/--full
    sig = SIGNALS[opts['--signal'].removeprefix('SIG')]
    send(([batch] if '--batch' in opts or '--full' in opts else []) +
         ([] if '--batch' in opts else task_pids(rest[0])), sig)
    return 0
  open(os.path.join(d, 'cancel'), 'w').close()   # cancel: SIGTERM to all, SIGKILL after KillWait
  send([batch] + task_pids(rest[0]), signal.SIGTERM)
  return 0


def srun(argv):
  opts, command = parse_options('srun', argv, SRUN_OPTIONS)
  job_id = os.environ.get('FAKE_SLURM_JOB') or die('srun', 'not inside a (stand-in) job')
  spec = read_json(os.path.join(job_dir(job_id), 'spec.json'))
  nodes = int(opts.get('--nodes', spec['nodes']))
  per_node = int(opts.get('--ntasks', nodes * spec['tasks_per_node'])) // nodes
  names = node_names(nodes)
  gpus = os.environ.get('SLURM_GPUS_ON_NODE')
  bind = opts.get('--gpu-bind', 'none')
  # slurmstepd signals the tasks themselves; a handler (not SIG_IGN, which tasks would inherit).
  signal.signal(signal.SIGTERM, lambda *_: None)
  step = len([f for f in os.listdir(job_dir(job_id)) if f.startswith('step')])
  open(os.path.join(job_dir(job_id), f'step{step}'), 'w').close()
  procs, lock = [], threading.Lock()
  for n in range(nodes):
    for local in range(per_node):
      rank = n * per_node + local
      env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(local), SLURM_NODEID=str(n),
                 SLURMD_NODENAME=names[n], SLURM_STEP_ID=str(step), SLURM_STEPID=str(step),
                 SLURM_STEP_NODELIST=','.join(names), SLURM_STEP_NUM_NODES=str(nodes),
                 SLURM_STEP_NUM_TASKS=str(nodes * per_node), SLURM_NTASKS=str(nodes * per_node),
                 SLURM_STEP_TASKS_PER_NODE=str(per_node))
      if gpus and bind != 'none':   # single:1 / per_task:1: the task's own GPU, as device 0
        env['CUDA_VISIBLE_DEVICES'] = str(local)
      p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
      with open(os.path.join(job_dir(job_id), 'tasks', str(rank)), 'w') as f:
        f.write(str(p.pid))
      procs.append((rank, p))

  def pump(rank, p):
    for line in iter(p.stdout.readline, b''):
      with lock:
        sys.stdout.buffer.write((f'{rank}: ' if '--label' in opts else '').encode() + line)
        sys.stdout.flush()

  threads = [threading.Thread(target=pump, args=rp) for rp in procs]
  for t in threads:
    t.start()
  codes, kill_at = {}, None
  while len(codes) < len(procs):
    for rank, p in procs:
      if rank not in codes and p.poll() is not None:
        codes[rank] = p.returncode if p.returncode >= 0 else 128 - p.returncode
        if codes[rank] and opts.get('--kill-on-bad-exit') == '1' and kill_at is None:
          print(f'srun: error: task {rank}: Exited with exit code {codes[rank]}; terminating the '
                'step (--kill-on-bad-exit)', file=sys.stderr)
          send([q.pid for r, q in procs if r not in codes], signal.SIGTERM)
          kill_at = time.time() + KILL_WAIT
    if kill_at is not None and time.time() > kill_at:
      send([q.pid for r, q in procs if r not in codes], signal.SIGKILL)
    time.sleep(0.05)
  for t in threads:
    t.join()
  for rank in codes:
    try:
      os.remove(os.path.join(job_dir(job_id), 'tasks', str(rank)))
    except FileNotFoundError:
      pass
  return max(codes.values())


if __name__ == '__main__':
  if sys.argv[1] == '_run_job':
    sys.exit(run_job(int(sys.argv[2])))
  tool = sys.argv[1]
  sys.exit({'sbatch': sbatch, 'srun': srun, 'scontrol': scontrol, 'scancel': scancel}[tool](
      sys.argv[2:]))
