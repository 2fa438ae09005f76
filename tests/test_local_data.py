"""Local image sources (data.name='npz' and 'folder') through the grain pipeline, their errors, and
the MNIST configs on a 512-image subset of ../shared/data (skipped, saying why, when it is absent)."""
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from flowmap_jax import config_io
from flowmap_jax.data import images
from test_pipeline import run_main

REPO = config_io.REPO_ROOT
SHARED = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'mnist_train.npz')


def data_config(name, path, **kw):
  d = dict(name=name, path=str(path), image_size=8, channels=3, num_classes=0,
           class_conditional=False, random_flip=False, batch_size=4, sigma0=0.5, data_dir='',
           num_workers=1)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def batches(d, n, **kw):
  it = iter(images.dataset(d, seed=0, batch_size=d.batch_size, process_index=kw.pop('index', 0),
                           process_count=kw.pop('count', 1), **kw))
  return it, [next(it) for _ in range(n)]


def write_npz(path, n=12, size=8, channels=None, labels=True):
  rng = np.random.default_rng(0)
  shape = (n, size, size) + ((channels,) if channels else ())
  arrays = {'images': rng.integers(0, 256, shape, dtype=np.uint8)}
  if labels:
    arrays['labels'] = np.arange(n) % 3
  np.savez(path, **arrays)
  return arrays


def test_npz_rgb_with_labels_every_image_once_per_epoch(tmp_path):
  arrays = write_npz(tmp_path / 'd.npz', channels=3)
  d = data_config('npz', tmp_path / 'd.npz', num_classes=3, class_conditional=True)
  _, bs = batches(d, 3)   # 12 images, batch 4: one epoch
  seen = np.concatenate([b['image'] for b in bs])
  assert seen.shape == (12, 8, 8, 3) and seen.dtype == np.uint8
  # Every image once, each with its own label.
  key = lambda im: im.tobytes()
  want = {key(im): int(l) for im, l in zip(arrays['images'], arrays['labels'])}
  got = {key(im): int(l) for b in bs for im, l in zip(b['image'], b['label'])}
  assert got == want


def test_npz_grayscale_stays_one_channel_and_is_resized(tmp_path):
  write_npz(tmp_path / 'g.npz', size=28, labels=False)
  d = data_config('npz', tmp_path / 'g.npz', channels=1, image_size=14)
  _, (b,) = batches(d, 1)
  assert b['image'].shape == (4, 14, 14, 1)
  assert images.image_shape(d) == (14, 14, 1)


def test_processes_read_disjoint_shards(tmp_path):
  write_npz(tmp_path / 'd.npz', n=16, channels=3)
  d = data_config('npz', tmp_path / 'd.npz', batch_size=2)
  shards = [np.concatenate([b['image'] for b in batches(d, 4, index=i, count=2)[1]])
            for i in range(2)]
  a = {im.tobytes() for im in shards[0]}
  b = {im.tobytes() for im in shards[1]}
  assert len(a) == len(b) == 8 and not a & b


def test_folder_of_class_subfolders_grayscale(tmp_path):
  rng = np.random.default_rng(1)
  for c in ('cat', 'ant', 'bee'):
    (tmp_path / c).mkdir()
    for i in range(3):
      Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8), 'L').save(
          tmp_path / c / f'{i}.png')
  d = data_config('folder', tmp_path, channels=1, num_classes=3, class_conditional=True,
                  batch_size=9)
  src = images.source(d)
  assert src.classes == ['ant', 'bee', 'cat']   # sorted, as ImageFolder
  _, (b,) = batches(d, 1)
  assert b['image'].shape == (9, 8, 8, 1)
  assert sorted(b['label'].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_flat_folder_rgb_without_labels(tmp_path):
  rng = np.random.default_rng(2)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f'{i}.jpg')
  d = data_config('folder', tmp_path)
  _, (b,) = batches(d, 1)
  assert b['image'].shape == (4, 8, 8, 3) and not b['label'].any()


def test_resume_mid_epoch_gives_the_same_batches(tmp_path):
  write_npz(tmp_path / 'd.npz', n=20, channels=3)
  d = data_config('npz', tmp_path / 'd.npz', batch_size=3)
  it, straight = batches(d, 9)          # past the end of the first epoch (20 / 3)
  it2, first = batches(d, 4)
  state = it2.get_state()
  it3 = iter(images.dataset(d, seed=0, batch_size=3, process_index=0, process_count=1))
  it3.set_state(state)
  rest = [next(it3) for _ in range(5)]
  for a, b in zip(straight, first + rest):
    np.testing.assert_array_equal(a['image'], b['image'])


@pytest.mark.parametrize('case, message', [
    ('missing_key', 'no array named "images"'),
    ('dtype', 'dtype float32'),
    ('rank', r'expected \(N, H, W\) or'),
    ('labels', 'labels have shape'),
    ('unreadable_image', 'not a readable image'),
    ('empty_folder', 'no images'),
    ('too_few_classes', 'set it to 3'),
])
def test_bad_input_names_the_file_and_the_problem(tmp_path, case, message):
  path, kw = tmp_path / 'd.npz', {}
  if case == 'missing_key':
    np.savez(path, pictures=np.zeros((2, 8, 8), np.uint8))
  elif case == 'dtype':
    np.savez(path, images=np.zeros((2, 8, 8), np.float32))
  elif case == 'rank':
    np.savez(path, images=np.zeros((2, 8), np.uint8))
  elif case == 'labels':
    np.savez(path, images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(3, np.int64))
  elif case == 'too_few_classes':
    write_npz(path, labels=True, channels=3)
    kw = dict(class_conditional=True, num_classes=2)
  else:
    path = tmp_path / 'folder'
    path.mkdir()
    if case == 'unreadable_image':
      (path / 'broken.png').write_bytes(b'not a png')
  name = 'npz' if str(path).endswith('.npz') else 'folder'
  d = data_config(name, path, **kw)
  with pytest.raises(images.DataError, match=message) as e:
    if case == 'unreadable_image':
      batches(d, 1)
    else:
      images.source(d)
  assert str(path) in str(e.value) or case == 'unreadable_image' and 'broken.png' in str(e.value)


def test_bad_file_through_the_entry_point_is_exit_code_2(tmp_path):
  np.savez(tmp_path / 'bad.npz', images=np.zeros((4, 28, 28), np.float32))
  # Negative labels were once answered "set data.num_classes to -10".
  np.savez(tmp_path / 'negative.npz', images=np.zeros((4, 28, 28), np.uint8),
           labels=-np.arange(11, 15))
  cases = [([f'--config.data.path={tmp_path / "bad.npz"}'], 'bad.npz: images have dtype float32'),
           ([f'--config.data.path={tmp_path / "negative.npz"}', '--config.data.num_classes=10'],
            'negative.npz: labels give labels -14..-11; labels must be the class indices 0, 1, ...'),
           ([f'--config.data.path={tmp_path}'], "is a folder; data.name='npz' reads one .npz file"),
           ([f'--config.data.path={tmp_path / "bad.npz"}', '--config.eval.classifier=/no/d.pickle'],
            "eval.classifier='/no/d.pickle' does not exist"),
           ([f'--config.data.path={tmp_path / "bad.npz"}', f'--config.eval.fid_weights={tmp_path}'],
            f"eval.fid_weights='{tmp_path}' is a folder, not a file"),
           ([f'--config.data.path={tmp_path / "bad.npz"}', '--config.data.data_dir=/no/tfds'],
            "data.data_dir='/no/tfds' is not a folder")]
  for i, (args, message) in enumerate(cases):
    r = run_main('--config=configs/fm_mnist.py:smoke', f'--workdir={tmp_path / f"run{i}"}', *args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(not os.path.exists(SHARED), reason=f'{SHARED} is absent: the shared MNIST '
                    'file is not on this machine')
def test_images_notebook_runs_end_to_end_at_smoke_size(tmp_path, monkeypatch):
  """notebooks/flowmap_jax_images_colab.ipynb on 512 real digits, tiny networks, CPU: the digit
  classifier (tools/train_digit_classifier.py, at batch 32: the plumbing in a third of batch 128's
  time), fm_mnist:smoke, then itvm_mnist:smoke distilled from it, both scored by the classifier,
  and flowmap_jax.load's samples. (The one MNIST end-to-end run of the suite: `python -m
  flowmap_jax.main` training a teacher first is the latent end-to-end test's.)"""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  with np.load(SHARED) as f:
    np.savez(tmp_path / 'mnist512.npz', images=f['images'][:512], labels=f['labels'][:512])
  monkeypatch.setenv('FLOWMAP_MNIST_NPZ', str(tmp_path / 'mnist512.npz'))
  monkeypatch.setenv('FLOWMAP_NOTEBOOK_SMOKE', '1')
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setenv('TMPDIR', str(tmp_path))   # the notebook's WORKDIR is a tempfile.mkdtemp
  nb = nbformat.read(os.path.join(REPO, 'notebooks', 'flowmap_jax_images_colab.ipynb'),
                     as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': REPO}}).execute()
  outputs = ''.join(str(o) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
  assert 'image/png' in outputs and 'Digit accuracy' in outputs and 'test accuracy' in outputs
  (workdir,) = tmp_path.glob('flowmap_mnist_*')
  for run in ('itvm_mnist', 'fm_mnist'):
    result = json.loads((workdir / run / 'eval.json').read_text())
    assert result['step'] == 2
  result = json.loads((workdir / 'itvm_mnist' / 'eval.json').read_text())
  for k in ('1', '2'):
    m = result['flow_map'][k]
    assert 0.0 <= m['accuracy'] <= 1.0 and m['feature_distance'] >= 0 and np.isfinite(m['energy'])
  assert 'accuracy' in result['teacher_ode']
  assert 'Digit accuracy' in (workdir / 'itvm_mnist' / 'eval.md').read_text()
  grid = np.asarray(Image.open(workdir / 'itvm_mnist' / 'plots' / 'samples.png'))
  assert grid.shape[1] > grid.shape[0]   # 10 class columns, 4 step rows
