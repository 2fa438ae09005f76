"""Runs image jobs one after another under `tfds.testing.mock_data`, in one process on one CPU
device, and writes their results as JSON. test_images.py starts it once for all its image runs
(a subprocess, because the test process simulates 8 devices, which every save and compile pays for).

python tests/image_runs.py JOBS.json OUT.json, JOBS a list of
{'id', 'mode': train|eval|sample|fid_stats|fid_weights, 'config': 'path:arg', 'workdir',
 'overrides': {'section.field': value}, 'path' (fid_weights)}.
"""
import json
import sys
import time
import traceback


def _config(job):
  from flowmap_jax import config_io  # pylint: disable=g-import-not-at-top
  c = config_io.load(job['config'])
  for key, value in job.get('overrides', {}).items():
    section, field = key.split('.')
    c[section][field] = value
  return c


def run(job):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flowmap_jax import train  # pylint: disable=g-import-not-at-top
  from flowmap_jax.evaluation import fid  # pylint: disable=g-import-not-at-top
  mode = job.get('mode', 'train')
  if mode == 'fid_weights':  # random Inception weights in the pickled format
    init = jax.jit(lambda k: fid.InceptionV3().init(k, jnp.zeros((1, 32, 32, 3), jnp.uint8)))
    fid.save_params(init(jax.random.key(0))['params'], job['path'])
    return job['path']
  c = _config(job)
  if mode == 'train':
    return train.train_and_evaluate(c, job['workdir'])
  if mode == 'eval':
    return train.evaluate_workdir(c, job['workdir'])
  if mode == 'sample':
    return sorted(train.sample_workdir(c, job['workdir']))
  if mode == 'fid_stats':
    return train.fid_stats_workdir(c, job['workdir'])
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


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
