"""The launchers end to end on this machine, with stand-ins for the cluster tools (tests/stand_ins):
launch/tpu_pod.sh through a fake `gcloud` (and `uv`) whose workers are local processes, and
launch/gpu_slurm.sh through fake sbatch/srun/scontrol/scancel, each running a real multi-process
smoke training that is preempted (SIGTERM), saves, and resumes when run again or requeued. The runs
import only what setup.py's install_requires bring (tests/stand_ins/plain_install: a plain
`pip install .` without installing anything). Also: runtime versions and queued resources, the
install check, the SLURM script's signal/requeue logic, JAX's SLURM device detection, local.sh
stopping the others when one process fails, and the npz/folder sources reading from a bucket.
"""
import ast
import glob
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAND_INS = os.path.join(REPO, 'tests', 'stand_ins')
SETUP = os.path.join(REPO, 'setup.py')
# A short 2-D run: log every 10 steps, no periodic checkpoint (only the preemption one), a small
# evaluation. 1 CPU device a process, XLA's backend optimisation off (as in the test process).
SMOKE = ['--config=configs/lsd_checkerboard.py:smoke', '--config.train.log_every=10',
         '--config.train.checkpoint_every=100000', '--config.eval.steps=(1,)',
         '--config.eval.num_samples=1000', '--config.eval.energy_samples=1000',
         '--config.eval.batch_size=1000']
ZONE = 'us-central2-b'


def _setup_field(field):
  tree = ast.parse(open(SETUP).read())
  call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '')
              == 'setup')
  return next(ast.literal_eval(k.value) for k in call.keywords if k.arg == field)


def _closure(requirements):
  """The distributions (canonical names) a plain install of `requirements` brings: theirs too,
  markers evaluated, extras followed, as installed here."""
  seen, todo = {}, [Requirement(r) for r in requirements]
  while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in seen and set(req.extras) <= seen[name]:
      continue
    seen.setdefault(name, set()).update(req.extras)
    try:
      dist = importlib.metadata.distribution(req.name)
    except importlib.metadata.PackageNotFoundError:
      continue
    for r in dist.requires or []:
      sub = Requirement(r)
      if sub.marker is None or any(sub.marker.evaluate({'extra': e}) for e in seen[name] | {''}):
        todo.append(sub)
  return set(seen)


def _brought_by(requirements):
  """{top-level import name: brought by `requirements`?} for every installed package."""
  closure = _closure(requirements) | {'flowmap-jax'}   # this package itself (an egg-info here)
  return {top: any(canonicalize_name(d) in closure for d in dists)
          for top, dists in importlib.metadata.packages_distributions().items()
          if top not in sys.stdlib_module_names}


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The launchers' environment: the stand-ins first on PATH, their state folders, and imports
  limited to what install_requires bring (the rest of this machine's packages answer 'not
  installed')."""
  tmp = tmp_path_factory.mktemp('launch')
  blocked = sorted(top for top, ok in _brought_by(_setup_field('install_requires')).items()
                   if not ok)
  (tmp / 'blocked.json').write_text(json.dumps(blocked))
  return dict(os.environ, PATH=f'{STAND_INS}:{os.environ["PATH"]}',
              FAKE_GCLOUD_STATE=str(tmp / 'gcloud'), FAKE_SLURM_STATE=str(tmp / 'slurm'),
              FLOWMAP_TPU_POLL_SECONDS='0.05', TF_CPP_MIN_LOG_LEVEL='3',
              XLA_FLAGS=xla_flags.FAST,
              PYTHONPATH=os.path.join(STAND_INS, 'plain_install'),
              FLOWMAP_PLAIN_INSTALL=str(tmp / 'blocked.json'))


def _wait(predicate, what, timeout=300, proc=None):
  deadline = time.time() + timeout
  while not predicate():
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'{what}: the launcher ended first (exit {proc.returncode})')
    assert time.time() < deadline, f'timed out ({timeout} s) waiting for {what}'
    time.sleep(0.1)


def _read(path):
  return open(path, errors='replace').read() if os.path.exists(path) else ''


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _calls(env, name='calls.jsonl'):
  with open(os.path.join(env['FAKE_GCLOUD_STATE'], name)) as f:
    return [json.loads(l) for l in f]


def test_every_import_of_the_package_is_brought_by_install_requires():
  """No module the code imports (lazy imports included) comes only from the test extra or from
  this machine; the runs below check the same at run time, third-party imports included."""
  brought = _brought_by(_setup_field('install_requires'))
  extras = set()
  for reqs in _setup_field('extras_require').values():
    extras |= {t for t, ok in _brought_by(reqs).items() if ok}
  missing = []
  for path in glob.glob(os.path.join(REPO, 'flowmap_jax', '**', '*.py'), recursive=True):
    for node in ast.walk(ast.parse(open(path).read())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
      for top in {n.partition('.')[0] for n in names}:
        if top in ('flowmap_jax', 'configs') or top in sys.stdlib_module_names:
          continue
        if not brought.get(top) and top not in extras:
          missing.append(f'{os.path.relpath(path, REPO)} imports {top}')
  assert not missing, missing
  # The finding of issue 25: tensorflow-cpu (2.21) no longer brings tensorboard, whose protocol
  # buffers our TensorBoard writer writes (flowmap_jax/writers.py); setup.py must name it.
  without = [r for r in _setup_field('install_requires') if not r.startswith('tensorboard')]
  assert brought['tensorboard'] and not _brought_by(without).get('tensorboard')
  assert _setup_field('python_requires') == '>=3.11'


def test_install_check_prints_versions_and_stops_below_a_floor(tmp_path):
  check = os.path.join(REPO, 'launch', 'check_install.py')
  r = subprocess.run([sys.executable, check], capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  assert f'jax=={importlib.metadata.version("jax")}' in r.stdout and 'every floor' in r.stdout
  (tmp_path / 'setup.py').write_text(open(SETUP).read().replace("'jax>=0.7.0'", "'jax>=99.0'"))
  r = subprocess.run([sys.executable, check, str(tmp_path / 'setup.py')], capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 1
  assert f'jax {importlib.metadata.version("jax")} is below the floor 99.0' in r.stderr


def _tpu(env, *args, timeout=300):
  return subprocess.run(['bash', 'launch/tpu_pod.sh', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('accelerator, runtime, extra, track', [
    ('v4-8', 'tpu-ubuntu2204-base', [], 'alpha'),
    ('v5litepod-16', 'v2-alpha-tpuv5-lite', ['--no-autocheckpoint'], 'ga'),
    ('v5p-8', 'v2-alpha-tpuv5', [], 'ga'),
    ('v5litepod-8', 'v2-alpha-tpuv5-lite', ['--spot'], 'ga'),   # Spot: reclaimed, not maintained
    ('v6e-8', 'v2-alpha-tpuv6e', ['--spot'], 'ga'),
])
def test_create_queues_a_resource_with_the_runtime_of_the_accelerator(env, accelerator, runtime,
                                                                     extra, track):
  name = f'rt-{accelerator}'
  r = _tpu(env, 'create', name, ZONE, accelerator, *extra)
  assert r.returncode == 0, r.stderr
  create = [c['argv'] for c in _calls(env) if 'create' in c['argv'] and name in c['argv']][-1]
  expected = ['compute', 'tpus', 'queued-resources', 'create', name, '--node-id', name, '--zone',
              ZONE, '--accelerator-type', accelerator, '--runtime-version', runtime]
  autocheckpoint = track == 'alpha'
  assert create == (['alpha'] if autocheckpoint else []) + expected + (
      ['--spot'] if '--spot' in extra else []) + (['--autocheckpoint-enabled'] if autocheckpoint
                                                   else [])
  assert 'queued resource ' + name + ': ACTIVE' in r.stdout   # polled until the slice is there
  if accelerator.startswith(('v5p', 'v6e')):
    assert 'Autocheckpoint for v2-v4 and v5e only' in r.stderr
  assert _tpu(env, 'delete', name, ZONE).returncode == 0


def test_create_refuses_a_runtime_the_accelerator_does_not_take(env):
  r = _tpu(env, 'create', 'wrong', ZONE, 'v5litepod-8', 'tpu-ubuntu2204-base')
  assert r.returncode != 0 and "not the one for v5litepod-8 ('v2-alpha-tpuv5-lite'" in r.stderr
  # The stand-in holds every command to its documented form, e.g. a flag of the alpha track only.
  r = subprocess.run(['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'x', '--zone',
                      ZONE, '--node-id', 'x', '--accelerator-type', 'v4-8', '--runtime-version',
                      'tpu-ubuntu2204-base', '--autocheckpoint-enabled'], env=env,
                     capture_output=True, text=True)
  assert r.returncode == 2 and '--autocheckpoint-enabled (only in `gcloud alpha`)' in r.stderr


def _worker(env, name, k, *path):
  return os.path.join(env['FAKE_GCLOUD_STATE'], 'tpus', name, f'worker{k}', 'flowmap_jax', *path)


def test_tpu_pod_create_install_run_stop_resume_logs_delete(env, tmp_path):
  name, workdir = 'pod', str(tmp_path / 'workdir')
  r = _tpu(env, 'create', name, ZONE, 'v4-16', '--spot')   # 2 workers
  assert r.returncode == 0, r.stderr
  create = next(c['argv'] for c in _calls(env) if c['argv'][3:5] == ['create', name])
  assert '--spot' in create and '--autocheckpoint-enabled' not in create

  r = _tpu(env, 'install', name, ZONE)
  assert r.returncode == 0, r.stdout + r.stderr
  dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=REPO, capture_output=True,
                         text=True).stdout.splitlines()
  if dirty:
    assert 'uncommitted change(s)' in r.stdout
  # Every worker has the working tree as it is, uncommitted edits included.
  files = ['setup.py', 'launch/tpu_pod.sh', 'tests/test_launch.py'] + [
      l[3:] for l in dirty if os.path.isfile(os.path.join(REPO, l[3:]))][:5]
  for k in (0, 1):
    for f in files:
      assert open(_worker(env, name, k, 'src', f), 'rb').read() == open(
          os.path.join(REPO, f), 'rb').read(), f
    log = _read(sorted(glob.glob(_worker(env, name, k, 'logs', 'install-*.log')))[-1])
    assert f'jax=={importlib.metadata.version("jax")}' in log and 'every floor' in log
  uv = [c['argv'] for c in _calls(env, 'uv_calls.jsonl')]
  assert sum(a[:3] == ['venv', '--python', '3.12'] for a in uv) == 2   # one venv a worker
  installs = [a for a in uv if a[:2] == ['pip', 'install']]
  assert len(installs) == 2 and all(a[-3] == '-e' and a[-2].endswith('/flowmap_jax/src') and
                                    a[-1] == 'jax[tpu]' for a in installs)

  run = [*SMOKE, f'--workdir={workdir}', '--config.train.num_steps=100000']
  r = _tpu(env, 'run', name, ZONE, *run)
  assert r.returncode == 0, r.stderr
  pids = [int(open(_worker(env, name, k, 'run.pid')).read()) for k in (0, 1)]
  again = _tpu(env, 'run', name, ZONE, *run)
  assert again.returncode != 0 and 'a job is running' in again.stderr
  _wait(lambda: 'loss=' in _read(_worker(env, name, 0, 'logs', 'run.log')), 'training steps')
  logs = _tpu(env, 'logs', name, ZONE, '--no-follow').stdout
  assert f'[{name}-w-0] ' in logs and f'[{name}-w-1] ' in logs

  r = _tpu(env, 'stop', name, ZONE)
  assert r.returncode == 0, r.stderr
  assert not any(_alive(p) for p in pids)
  steps = {re.search(r'Preempted \(SIGTERM\) at step (\d+)', _read(
      _worker(env, name, k, 'logs', 'run.log'))).group(1) for k in (0, 1)}
  assert len(steps) == 1, steps   # both saved at the step they agreed on
  step = int(steps.pop())
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(step)))
  assert r.stdout.count('stopped pid') == 2

  r = _tpu(env, 'run', name, ZONE, *run[:-1], f'--config.train.num_steps={step + 20}')
  assert r.returncode == 0, r.stderr
  pids = [int(open(_worker(env, name, k, 'run.pid')).read()) for k in (0, 1)]
  _wait(lambda: not any(_alive(p) for p in pids), 'the resumed run to end')
  for k in (0, 1):
    log = _read(_worker(env, name, k, 'logs', 'run.log'))
    assert f'Resuming {workdir} from step {step}.' in log and 'Evaluation of' in log, log[-3000:]
    assert len(glob.glob(_worker(env, name, k, 'logs', 'run-*.log'))) == 2   # the first one kept
  assert json.load(open(os.path.join(workdir, 'eval.json')))['step'] == step + 20
  status = _tpu(env, 'status', name, ZONE).stdout
  assert 'ACTIVE' in status and status.count('ended') == 2

  r = _tpu(env, 'delete', name, ZONE)
  assert r.returncode == 0, r.stderr
  assert _calls(env)[-1]['argv'] == ['compute', 'tpus', 'queued-resources', 'delete', name,
                                     '--zone', ZONE, '--force', '--quiet']


def _job_dir(env):
  (job,) = os.listdir(os.path.join(env['FAKE_SLURM_STATE'], 'jobs'))
  return os.path.join(env['FAKE_SLURM_STATE'], 'jobs', job)


def test_gpu_slurm_one_task_per_gpu_time_limit_requeue_resume(env, tmp_path):
  """2 tasks on a node with 2 GPUs, each JAX process given its GPU (SLURM_LOCALID) by JAX's own
  SLURM detection; SIGTERM ahead of the time limit saves, the script requeues, the requeued job
  resumes from the workdir and finishes."""
  workdir, steps = str(tmp_path / 'workdir'), 100
  out = str(tmp_path / 'slurm-%j.log')
  proc = subprocess.Popen(
      ['sbatch', '--wait', '--nodes=1', '--ntasks-per-node=2', '--gpus-per-node=2',
       f'--output={out}', 'launch/gpu_slurm.sh', *SMOKE, f'--workdir={workdir}',
       f'--config.train.num_steps={steps}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  try:
    _wait(lambda: os.path.exists(os.path.join(env['FAKE_SLURM_STATE'], 'jobs')), 'the job', 30,
          proc)
    job = _job_dir(env)
    log_path = out.replace('%j', os.path.basename(job))
    _wait(lambda: re.search(r'^0: .*\] \[\d+\] .*loss=', _read(log_path), re.M), 'training steps',
          proc=proc)
    open(os.path.join(job, 'time_limit'), 'w').close()   # --time minus --signal's 300 s is now
    proc.wait(timeout=400)
  finally:
    if proc.poll() is None:
      proc.kill()
  log = _read(log_path)
  assert proc.returncode == 0, proc.stdout.read() + log[-4000:]
  assert '(restart 0)' in log and '(restart 1)' in log and 'requeueing job' in log
  for task in (0, 1):
    assert f'{task}: ' in log and re.search(
        rf'^{task}: .*JAX distributed initialized with visible devices: {task}$', log, re.M)
    assert re.search(rf'^{task}: .*Process {task} of 2; 1 local and 2 global devices', log, re.M)
  preempted = set(re.findall(r'^[01]: Preempted \(SIGTERM\) at step (\d+)', log, re.M))
  assert len(preempted) == 1, log[-4000:]
  step = int(preempted.pop())
  assert 0 < step < steps
  assert len(re.findall(rf'^[01]: .*Resuming {workdir} from step {step}\.', log, re.M)) == 2
  assert json.load(open(os.path.join(workdir, 'eval.json')))['step'] == steps
  assert 'ModuleNotFoundError' not in log
  assert log.rstrip().endswith('ends with exit status 0')


def test_gpu_slurm_script_asks_for_signal_and_requeue_and_scancel_ends_it(env, tmp_path):
  """The script's directives, and its logic with a stand-in program (no JAX): scancel ends the job
  without a requeue; a task count that is not one per GPU is refused."""
  text = open(os.path.join(REPO, 'launch', 'gpu_slurm.sh')).read()
  d = dict(re.findall(r'^#SBATCH --([\w-]+)(?:=(\S+))?', text, re.M))
  assert d['ntasks-per-node'] == d['gpus-per-node'] and 'requeue' in d
  assert d['open-mode'] == 'append' and re.fullmatch(r'TERM@(\d+)', d['signal'])
  program = tmp_path / 'program'
  program.write_text('#!/usr/bin/env bash\ntrap \'echo "task $SLURM_PROCID saved"; exit 143\' TERM\n'
                     'echo "task $SLURM_PROCID up"\nfor ((i = 0; i < 600; i++)); do sleep 0.1; '
                     'done\n')
  program.chmod(0o755)
  run_env = dict(env, FLOWMAP_PYTHON=str(program), FAKE_SLURM_STATE=str(tmp_path / 'state'))
  out = str(tmp_path / 'job.log')
  proc = subprocess.Popen(['sbatch', '--wait', '--nodes=2', '--ntasks-per-node=2',
                           '--gpus-per-node=2', f'--output={out}', 'launch/gpu_slurm.sh', '--x'],
                          cwd=REPO, env=run_env)
  try:
    _wait(lambda: _read(out).count(' up') == 4, 'the 4 tasks', 60, proc)
    subprocess.run(['scancel', os.path.basename(_job_dir(run_env))], env=run_env, check=True)
    assert proc.wait(timeout=60) == 143
  finally:
    if proc.poll() is None:
      proc.kill()
  log = _read(out)
  assert log.count(' saved') == 4 and 'requeue' not in log and '(restart 1)' not in log
  r = subprocess.run(['sbatch', '--wait', '--ntasks-per-node=1', '--gpus-per-node=8',
                      f'--output={out}', 'launch/gpu_slurm.sh'], cwd=REPO, env=run_env,
                     capture_output=True, text=True)
  assert r.returncode == 2 and 'one task per GPU' in _read(out)


def test_jax_under_slurm_gives_each_process_one_gpu(tmp_path):
  """The finding behind one task per GPU: with SLURM's variables, jax.distributed.initialize()
  restricts each process to GPU SLURM_LOCALID (one task on a node with 2 GPUs: GPU 0 only, which
  main.py reports); FLOWMAP_COORDINATOR (launch/local.sh) turns the detection off."""
  import socket  # pylint: disable=g-import-not-at-top
  code = ('import logging; logging.basicConfig(level=logging.INFO); import jax; '
          'from flowmap_jax import main; main.initialize_distributed(jax)')
  procs = []
  for coordinator in (False, True):
    with socket.socket() as s:
      s.bind(('', 0))
      port = s.getsockname()[1]
    slurm = dict(SLURM_JOB_ID='7', SLURM_STEP_NODELIST='localhost', SLURM_NTASKS='1',
                 SLURM_PROCID='0', SLURM_LOCALID='0', SLURM_NTASKS_PER_NODE='1',
                 SLURM_GPUS_ON_NODE='2', JAX_COORDINATOR_PORT=str(port))
    if coordinator:
      slurm.update(FLOWMAP_COORDINATOR=f'127.0.0.1:{port}', FLOWMAP_NUM_PROCESSES='1',
                   FLOWMAP_PROCESS_ID='0')
    procs.append(subprocess.Popen([sys.executable, '-c', code], cwd=REPO, text=True,
                                  env=dict(os.environ, XLA_FLAGS='', **slurm),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  detected, explicit = (p.communicate(timeout=120)[0] for p in procs)
  assert 'JAX distributed initialized with visible devices: 0' in detected
  assert 'SLURM gives this node 2 GPUs and 1 task(s) of 1 GPU(s) each' in detected
  assert '1 GPUs are idle; use --ntasks-per-node=2' in detected
  assert 'visible devices' not in explicit and 'Process 0 of 1' in explicit


def test_local_sh_stops_the_others_when_one_process_fails(tmp_path):
  """A process that fails no longer leaves the others waiting for it in a collective (the 'hang'
  of issue 25): local.sh ends them and shows the failing process's log."""
  fake = tmp_path / 'bin'
  fake.mkdir()
  (fake / 'python').write_text(
      '#!/usr/bin/env bash\n'
      f'if [[ $1 == -c ]]; then exec {sys.executable} "$@"; fi\n'
      'if [[ $FLOWMAP_PROCESS_ID == 1 ]]; then echo "JSONDecodeError in process 1" >&2; exit 1; fi\n'
      'echo $$ > "$PIDFILE"; trap "exit 143" TERM; for ((i = 0; i < 900; i++)); do sleep 0.1; done\n')
  (fake / 'python').chmod(0o755)
  t0 = time.time()
  r = subprocess.run(['bash', 'launch/local.sh', '2', '1', '--config=x'], cwd=REPO,
                     env=dict(os.environ, PATH=f'{fake}:{os.environ["PATH"]}',
                              PIDFILE=str(tmp_path / 'pid'), FLOWMAP_LOG_DIR=str(tmp_path)),
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 1 and time.time() - t0 < 30
  assert 'process 1 failed (exit 1); stopping the others' in r.stderr
  assert 'JSONDecodeError in process 1' in r.stderr
  assert not _alive(int(open(tmp_path / 'pid').read()))


def test_npz_and_folder_sources_read_from_a_bucket(monkeypatch):
  """data.path on gs:// through etils.epath: here an in-memory fsspec filesystem stands in for GCS
  (the path class is epath's gs:// one, not the local one)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from etils.epath import backend  # pylint: disable=g-import-not-at-top
  from fsspec.implementations import memory  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  from flowmap_jax.data import images  # pylint: disable=g-import-not-at-top

  class FakeGCS(memory.MemoryFileSystem):
    protocol = ('gs', 'gcs')
    store, pseudo_dirs = {}, ['']

    def __init__(self, *args, finalize_on_close=None, **kwargs):
      del finalize_on_close   # etils passes gcsfs's option
      super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
      return '/' + re.sub(r'^(gs|gcs)://', '', str(path)).lstrip('/')

  monkeypatch.setenv('EPATH_USE_TF', 'false')   # epath's fsspec backend for gs://, not tf.io.gfile
  # ... which epath reads once per process (functools.cache): in the suite, an earlier test has
  # already asked, with TensorFlow importable.
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  registry = importlib.import_module('fsspec.registry')._registry  # pylint: disable=protected-access
  monkeypatch.setitem(registry, 'gcs', FakeGCS)
  monkeypatch.setitem(registry, 'gs', FakeGCS)
  backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  try:
    rng = np.random.default_rng(0)
    bucket = epath.Path('gs://bucket/data')
    assert type(bucket).__name__ != 'PosixPath' and str(bucket).startswith('gs://')
    assert bucket._backend is backend.fsspec_backend  # pylint: disable=protected-access
    with (bucket / 'set.npz').open('wb') as f:
      np.savez(f, images=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
               labels=np.arange(6) % 2)
    for k, cls in enumerate(('cat', 'dog')):
      for i in range(2 + k):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format='png')
        (bucket / 'folder' / cls / f'{i}.png').write_bytes(buf.getvalue())
    assert not os.path.exists('/bucket')   # nothing went to the local disk

    def data(name, path):
      return config_dict.ConfigDict(dict(name=name, path=path, image_size=8, channels=3,
                                         class_conditional=True, num_classes=2, random_flip=False,
                                         num_workers=1, batch_size=2, data_dir=''))
    npz = images.source(data('npz', 'gs://bucket/data/set.npz'))
    assert len(npz) == 6 and npz[3]['label'] == 1 and npz[0]['image'].shape == (8, 8, 3)
    folder = images.source(data('folder', 'gs://bucket/data/folder'))
    assert folder.classes == ['cat', 'dog'] and list(folder.labels) == [0, 0, 1, 1, 1]
    assert folder.files[0] == 'gs://bucket/data/folder/cat/0.png'
    assert folder[4]['image'].shape == (8, 8, 3) and folder[4]['label'] == 1
    batch = next(iter(images.dataset(data('folder', 'gs://bucket/data/folder'), seed=0,
                                     batch_size=2, process_index=0, process_count=1)))
    assert batch['image'].shape == (2, 8, 8, 3)
    with pytest.raises(images.DataError, match='gs://bucket/data/none.npz'):
      images.source(data('npz', 'gs://bucket/data/none.npz'))
    # Validation leaves a bucket path to the source (it says what is wrong when it opens it).
    config = config_io.load('configs/fm_mnist.py:smoke')
    config.data.path = 'gs://bucket/data/set.npz'
    problems = validate.problems_of(config, num_devices=1, num_processes=1)
    assert not [p for p in problems if 'data.path' in p], problems
  finally:
    FakeGCS.store.clear()
    backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
