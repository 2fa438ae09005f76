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


def test_tensorboard_event_file_holds_what_tf_summary_would_write(tmp_path):
  """Scalars, images (uint8 and float, RGB and gray) and hparams read back through TensorBoard's own
  reader as the records tf.summary writes: a scalar tensor under 'scalars', [width, height, png...]
  under 'images', the hparams plugin's session summary."""
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  from flowmap_jax import writers  # pylint: disable=g-import-not-at-top
  rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  gray = np.array([0.0, 0.5, 1.0, 2.0]).reshape(1, 2, 2, 1)
  w = writers.TensorBoardWriter(str(tmp_path))
  w.write_hparams({'optim.lr': 1e-3, 'loss.name': 'lsd', 'train.ema': True})
  w.write_scalars(3, {'loss': 1.5, 'grad_norm': 2})
  w.write_scalars(5, {'loss': 0.25})
  w.write_images(5, {'rgb': rgb, 'gray': gray})
  w.close()
  (events,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  acc = event_accumulator.EventAccumulator(events, size_guidance={'tensors': 0})
  acc.Reload()
  loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors('loss')]
  assert loss == [(3, 1.5), (5, 0.25)]
  assert acc.SummaryMetadata('loss').plugin_data.plugin_name == 'scalars'
  assert acc.SummaryMetadata('rgb').plugin_data.plugin_name == 'images'
  (rgb_event,) = acc.Tensors('rgb')
  width, height, *pngs = tensor_util.make_ndarray(rgb_event.tensor_proto)
  assert (int(width), int(height), len(pngs)) == (7, 5, 2)
  np.testing.assert_array_equal(np.stack([np.asarray(Image.open(io.BytesIO(p))) for p in pngs]),
                                rgb)
  (gray_event,) = acc.Tensors('gray')
  png = tensor_util.make_ndarray(gray_event.tensor_proto)[2]
  # tf.image.convert_image_dtype(saturate=True): x * 255.5 truncated, clipped to [0, 255]
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), [[0, 127], [255, 255]])
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top
  content = acc.PluginTagToContent('hparams')['_hparams_/session_start_info']
  hparams = metadata.parse_session_start_info_plugin_data(content).hparams
  assert (hparams['optim.lr'].number_value, hparams['loss.name'].string_value,
          hparams['train.ema'].bool_value) == (1e-3, 'lsd', True)


def test_a_run_never_imports_tensorflow(tmp_path):
  """Every module of the package imported and the run's writer used: TensorFlow (7 to 20 s per
  process here) stays out of sys.modules."""
  script = f'''
import pkgutil, importlib, sys
import numpy as np
import flowmap_jax
for m in pkgutil.walk_packages(flowmap_jax.__path__, 'flowmap_jax.'):
  importlib.import_module(m.name)
from flowmap_jax import config_io, writers
w = writers.create(config_io.load('configs/lsd_checkerboard.py:smoke'), {str(tmp_path)!r})
w.write_hparams({{'a': 1}})
w.write_scalars(1, {{'loss': 1.0}})
w.write_images(1, {{'x': np.zeros((1, 4, 4, 3), np.uint8)}})
w.close()
print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu')))
'''
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip().splitlines()[-1] == '[]'
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))
