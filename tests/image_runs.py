"""Runs image jobs one after another under `tfds.testing.mock_data`, in one process on one CPU
device, and writes their results as JSON. conftest.py starts it once per session, in the background
(a subprocess, because the test process simulates 8 devices, which every save and compile pays for,
and so that it runs beside the other tests on the second core); test_images.py waits for it.

python tests/image_runs.py JOBS.json OUT.json, JOBS a list of
{'id', 'mode': train|eval|sample|fid_stats|fid_weights, 'config': 'path:arg', 'workdir',
 'overrides': {'section.field': value}, 'path' (fid_weights)}.
"""
import json
import os
import subprocess
import sys
import time
import traceback

import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_CONFIGS = ['fm_cifar10', 'itvm_cifar10', 'lsd_cifar10', 'psd_cifar10', 'meanflow_cifar10',
                 'fm_imagenet64', 'itvm_imagenet64', 'lsd_imagenet64', 'meanflow_imagenet64',
                 'fm_celeba64', 'lsd_celeba64']
TEACHER_OF = {'itvm_cifar10': 'fm_cifar10', 'itvm_imagenet64': 'fm_imagenet64'}
# Real MNIST digits for the MNIST configs (a 512-image subset); their jobs are left out without it.
SHARED_MNIST = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'mnist_train.npz')


def _job(id_, name, workdir, mode='train', **overrides):
  return {'id': id_, 'mode': mode, 'config': os.path.join(REPO, 'configs', f'{name}.py') + ':smoke',
          'workdir': str(workdir), 'overrides': overrides}


def jobs(root):
  """Each image config's smoke run (teachers first: the fm runs are the itvm runs' teachers), a
  stopped and resumed run, a `--mode sample`, a DiT student of a U-Net teacher, and FID end to end
  on random Inception weights."""
  out = []
  for name in sorted(IMAGE_CONFIGS, key=lambda n: n in TEACHER_OF):
    extra = {'teacher.workdir': str(root / TEACHER_OF[name])} if name in TEACHER_OF else {}
    out.append(_job(name, name, root / name, **extra))
  # The stopped and resumed run: 1 step, stop, 1 more; lsd_cifar10's own smoke run is its 2 steps
  # straight.
  out += [_job('first_half', 'lsd_cifar10', root / 'resumed', **{'train.num_steps': 1}),
          _job('resumed', 'lsd_cifar10', root / 'resumed'),
          _job('sample', 'lsd_cifar10', root / 'lsd_cifar10', mode='sample'),
          _job('dit', 'itvm_imagenet64', root / 'dit',
               **{'model.name': 'dit', 'teacher.workdir': str(root / 'fm_imagenet64'),
                  'train.init_from_teacher': False})]
  if os.path.exists(SHARED_MNIST):
    import numpy as np  # pylint: disable=g-import-not-at-top
    with np.load(SHARED_MNIST) as f:
      np.savez(root / 'mnist512.npz', images=f['images'][:512], labels=f['labels'][:512])
    out.append(_job('lsd_mnist', 'lsd_mnist', root / 'lsd_mnist',
                    **{'data.path': str(root / 'mnist512.npz')}))
  weights, stats = str(root / 'inception.pickle'), str(root / 'stats.npz')
  fid_on = {'eval.fid_weights': weights, 'eval.fid_stats': stats}
  out += [{'id': 'fid_weights', 'mode': 'fid_weights', 'path': weights},
          _job('fid_stats', 'fm_cifar10', root, mode='fid_stats', **fid_on,
               **{'eval.batch_size': 8}),
          _job('fid_eval', 'fm_cifar10', root / 'fm_cifar10', mode='eval', **fid_on)]
  return out


class Background:
  """This script on `jobs(root)` in a subprocess; `result()` waits and returns (root, results).

  Under pytest-xdist the workers share one: the first to call `shared(root)` starts it, the others
  attach to it (the same `root`) and wait for it to end."""

  def __init__(self, root, start=True):
    self.root, self.proc, self.log = root, None, None
    if not start:
      return
    (root / 'jobs.json').write_text(json.dumps(jobs(root)))
    env = dict(os.environ, XLA_FLAGS=xla_flags.FAST)
    self.log = open(root / 'log.txt', 'w')
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                  str(root / 'jobs.json'), str(root / 'out.json')], cwd=REPO,
                                 env=env, stdout=self.log, stderr=subprocess.STDOUT)
    (root / 'pid').write_text(str(self.proc.pid))

  @classmethod
  def shared(cls, root):
    """The runs in `root`, started here unless another process (a pytest-xdist worker) did."""
    import filelock  # pylint: disable=g-import-not-at-top
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root) + '.lock'):
      return cls(root, start=not (root / 'pid').exists())

  def _ended(self):
    if self.proc is not None:
      return self.proc.poll() is not None
    if (self.root / 'done').exists():
      return True
    # Started by another worker, which alone can wait for it: ended once it is gone, or a zombie
    # (it died before writing `done`, and its parent has not waited for it yet).
    pid = int((self.root / 'pid').read_text())
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return True
    try:
      with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:   # no /proc (macOS): running until `done`, or until its parent waits for it
      return False

  def result(self, timeout):
    deadline = time.time() + timeout
    while not self._ended():
      if time.time() > deadline:
        raise TimeoutError(f'the image runs took over {timeout} s; see {self.root / "log.txt"}')
      time.sleep(0.5)
    out = self.root / 'out.json'
    assert out.exists(), (self.root / 'log.txt').read_text()[-3000:]
    return self.root, json.loads(out.read_text())

  def stop(self, timeout):
    """In the process that started the runs: waits for them (another worker's tests may still
    read them), ending them after `timeout` s."""
    if self.proc is None:
      return
    try:
      self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    self.log.close()


def _config(job):
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  c = config_io.load(job['config'])
  for key, value in job.get('overrides', {}).items():
    *path, field = key.split('.')
    node = c
    for p in path:
      node = node[p]
    node[field] = value
  return c


def run(job):
  from flowmap_jax import modes  # pylint: disable=g-import-not-at-top
  from flowmap_jax import train  # pylint: disable=g-import-not-at-top
  mode = job.get('mode', 'train')
  if mode == 'fid_weights':  # random Inception weights in the pickled format
    import fid_files  # pylint: disable=g-import-not-at-top
    return fid_files.write_random_weights(job['path'])
  c = _config(job)
  if mode == 'train':
    return train.train_and_evaluate(c, job['workdir'])
  if mode == 'eval':
    return modes.evaluate_workdir(c, job['workdir'])
  if mode == 'sample':
    return sorted(modes.sample_workdir(c, job['workdir']))
  if mode == 'fid_stats':
    return modes.fid_stats_workdir(c, job['workdir'])
  raise ValueError(f'unknown mode {mode!r}')


def main(jobs_path, out_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with open(jobs_path) as f:
    jobs = json.load(f)
  results = {}
  with tfds.testing.mock_data(num_examples=24):
    for job in jobs:
      start = time.time()
      try:
        results[job['id']] = {'ok': True, 'result': run(job)}
      except Exception:  # pylint: disable=broad-except  (reported per job, the others still run)
        results[job['id']] = {'ok': False, 'error': traceback.format_exc()[-4000:]}
      results[job['id']]['seconds'] = round(time.time() - start, 1)
      with open(out_path, 'w') as f:
        json.dump(results, f, indent=1, default=str)
  with open(os.path.join(os.path.dirname(out_path), 'done'), 'w'):
    pass   # every job has its result (a pytest-xdist worker that did not start this waits for it)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
