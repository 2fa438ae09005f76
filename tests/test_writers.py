"""Weights & Biases beside TensorBoard (flowmap_jax/writers.py), offline: never online in the tests."""
import glob
import json
import os

import pytest

from flowmap_jax import config_io
from flowmap_jax import train
from flowmap_jax import validate


def _history(run_dir):
  """{step: {key: value}} of an offline W&B run, read from its run-<id>.wandb file: a leveldb-style
  log (a 7-byte header, then chunks of crc32c(4) length(2) type(1) data in 32 KiB blocks; type 1 a
  whole record, 2..4 its first, middle and last parts) of W&B's Record protobufs."""
  from wandb.proto import wandb_internal_pb2 as pb  # pylint: disable=g-import-not-at-top
  (path,) = glob.glob(os.path.join(run_dir, 'run-*.wandb'))
  data = open(path, 'rb').read()
  assert data[:4] == b':W&B'
  pos, block, pending, history = 7, 32768, b'', {}
  while pos + 7 <= len(data):
    if block - pos % block < 7:   # a block's tail too short for a header is padding
      pos += block - pos % block
      continue
    length, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
    pending += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = pb.Record()
      record.ParseFromString(pending)
      pending = b''
      if record.WhichOneof('record_type') == 'history':
        history[record.history.step.num] = {
            i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
  return history


def test_wandb_gets_the_runs_metrics_and_a_resume_continues_its_run(tmp_path, monkeypatch):
  pytest.importorskip('wandb', reason='the [test] extra installs wandb; this run has none')
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  config = config_io.load('configs/lsd_checkerboard.py:smoke')
  config.train.wandb_project = 'flowmap-jax-test'
  config.eval.steps = (1,)
  results = train.train_and_evaluate(config, str(tmp_path))
  run_id = (tmp_path / 'wandb_id').read_text()
  (first,) = glob.glob(str(tmp_path / 'wandb' / f'offline-run-*-{run_id}'))
  history = _history(first)
  assert sorted(history) == [2, 4]   # train.log_every = 2
  assert all({'loss', 'grad_norm', 'loss/diag'} <= set(h) for h in history.values())
  assert history[4]['eval/flow_map_kl_1'] == pytest.approx(results['flow_map']['1']['kl'])
  assert history[4]['eval/samples/_type'] == 'image-file'
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))   # TensorBoard as before
  config.train.num_steps += 2   # resumed: the same W&B run goes on
  train.train_and_evaluate(config, str(tmp_path))
  runs = sorted(glob.glob(str(tmp_path / 'wandb' / 'offline-run-*')))
  assert len(runs) == 2 and all(r.endswith(run_id) for r in runs)
  assert (tmp_path / 'wandb_id').read_text() == run_id


def test_a_wandb_project_without_wandb_is_a_config_error(monkeypatch):
  import importlib.util  # pylint: disable=g-import-not-at-top
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'wandb' else real(name, *a))
  config = config_io.load('configs/lsd_checkerboard.py:smoke')
  config.train.wandb_project = 'p'
  (problem,) = validate.problems_of(config, num_devices=1, num_processes=1)
  assert 'train.wandb_project' in problem and '.[wandb]' in problem
