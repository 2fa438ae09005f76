"""Latent data (data/latents.py, docs/latents.md): preparation through the entry point on a tiny
random VAE written in diffusers' layout (tests/vae_files.py) and a small labelled .npz; the records
are the VAE's own posterior of each image and of its flip; preparation resumes; the training
pipeline's draws and its resumable iterator; a latent ITVM run end to end with decoded grids and an
FID proxy; every error is exit 2 with one message."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from flowmap_jax import config_io
from flowmap_jax.data import images
from flowmap_jax.data import latents
from flowmap_jax.evaluation import fid
from flowmap_jax.models import vae
import fid_files
from test_pipeline import run_main
import vae_files
import xla_flags

REPO = config_io.REPO_ROOT
SMOKE = os.path.join(REPO, 'configs', 'itvm_imagenet.py') + ':smoke'
N, CLASSES = 20, 3


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """20 labelled 20×24 images (ADM-cropped to 16 px), encoded once by `--mode prepare_latents`
  into 3 shards (8, 8, 4)."""
  root = tmp_path_factory.mktemp('latents')
  rng = np.random.RandomState(0)
  pictures = rng.randint(0, 256, (N, 20, 24, 3)).astype(np.uint8)
  labels = rng.randint(0, CLASSES, N)
  np.savez(root / 'images.npz', images=pictures, labels=labels)
  path = vae_files.write_random_vae(root / 'vae', seed=0)
  flags = [f'--config={SMOKE}', f'--config.data.vae={path}', f'--config.data.path={root / "z"}',
           '--config.data.images.name=npz', f'--config.data.images.path={root / "images.npz"}',
           f'--config.data.images.num_classes={CLASSES}']
  r = run_main(*flags, '--mode=prepare_latents')
  assert r.returncode == 0, r.stderr[-3000:]
  config = config_io.load(SMOKE)
  with config.unlocked():
    config.data.update(vae=str(path), path=str(root / 'z'))
    config.data.images.update(name='npz', path=str(root / 'images.npz'), num_classes=CLASSES)
  return dict(root=root, vae=str(path), flags=flags, labels=labels, config=config, stdout=r.stdout)


def _records(folder):
  manifest = latents.read_manifest(folder)
  layout = latents.Layout(tuple(manifest['latent_shape']), manifest['dtype'])
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  out = []
  for s in manifest['shards']:
    reader = array_record_module.ArrayRecordReader(str(folder / s['file']))
    out += [layout.unpack(r) for r in reader.read_all()]
    reader.close()
  return manifest, out


def test_records_are_the_vae_posterior_of_each_image_and_its_flip(prepared):
  d = prepared['config'].data
  manifest, records = _records(prepared['root'] / 'z')
  assert manifest['complete'] and manifest['num_images'] == N and manifest['num_shards'] == 3
  assert [s['count'] for s in manifest['shards']] == [8, 8, 4]
  assert manifest['vae_sha256'] == vae.file_hash(prepared['vae'])
  assert manifest['image_size'] == 16 and 'ADM' in manifest['crop']
  assert manifest['latent_shape'] == [8, 8, 4] and manifest['dtype'] == 'float16'
  assert prepared['stdout'].strip().endswith(str(prepared['root'] / 'z'))
  # The reference: the VAE applied directly to the ADM-cropped images and their mirror images.
  icfg = latents.image_config(d)
  crop = images.Preprocess(icfg)
  src = images.source(icfg)
  pictures = np.stack([crop.map(src[i])['image'] for i in range(N)])
  module, params = vae.load(d.vae)
  x = images.to_unit_range(pictures)
  for flip, (mean_key, std_key) in [(False, ('mean', 'std')), (True, ('mean_flip', 'std_flip'))]:
    mean, logvar = module.apply({'params': params}, x[:, :, ::-1] if flip else x,
                                method=module.encode)
    std = np.exp(0.5 * np.asarray(logvar))
    got_mean = np.stack([r[mean_key] for r in records])
    got_std = np.stack([r[std_key] for r in records])
    # float16 storage: half an ulp, 2^-11 relative (plus the float32 encoders' own differences).
    np.testing.assert_allclose(got_mean, mean, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(got_std, std, rtol=1e-3, atol=1e-6)
  assert not np.allclose(records[0]['mean'], records[0]['mean_flip'], atol=1e-2)  # flips differ
  np.testing.assert_array_equal([r['label'] for r in records], prepared['labels'])
  size = sum((prepared['root'] / 'z' / s['file']).stat().st_size for s in manifest['shards'])
  per_image = latents.disk_bytes_per_image((8, 8, 4))
  assert per_image == 4 * 8 * 8 * 4 * 2 + 4
  # ArrayRecord pads each file to a whole number of 64 KiB blocks: 0.2 % of a 2048-image shard of
  # 32 KiB records (256 px), a few bytes per record besides.
  assert N * per_image <= size <= N * per_image + 3 * 2 * 65536, size


def test_a_stopped_preparation_keeps_finished_shards_and_redoes_the_half_written_one(prepared):
  """What a kill leaves: finished shards under their names, the current one as a .tmp, the
  manifest still a plan (complete: false)."""
  done = prepared['root'] / 'z'
  folder = prepared['root'] / 'stopped'
  shutil.copytree(done, folder)
  manifest = json.loads((folder / latents.MANIFEST).read_text())
  plan = {k: v for k, v in manifest.items() if k not in ('shards', 'shards_done')}
  (folder / latents.MANIFEST).write_text(json.dumps(dict(plan, complete=False)))
  names = [s['file'] for s in manifest['shards']]
  (folder / names[1]).rename(folder / (names[1] + '.tmp'))
  with open(folder / (names[1] + '.tmp'), 'r+b') as f:
    f.truncate(100)
  kept = {n: (folder / n).stat().st_mtime_ns for n in (names[0], names[2])}
  r = run_main(*prepared['flags'], f'--config.data.path={folder}', '--mode=prepare_latents')
  assert r.returncode == 0, r.stderr[-3000:]
  assert '2 of this process\'s 3 shards are finished' in r.stderr
  assert {n: (folder / n).stat().st_mtime_ns for n in kept} == kept   # not rewritten
  assert not (folder / (names[1] + '.tmp')).exists()
  for n in names:
    assert (folder / n).read_bytes() == (done / n).read_bytes(), n
  assert json.loads((folder / latents.MANIFEST).read_text())['complete']


def test_two_processes_prepare_the_same_shards(prepared, tmp_path):
  """launch/local.sh 2 1: process k encodes shards k, k + 2, ...; process 0 writes the manifest
  after both finished; the folder equals the one process's, byte for byte."""
  import subprocess  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'two'
  r = subprocess.run(['bash', 'launch/local.sh', '2', '1', *prepared['flags'],
                      f'--config.data.path={folder}', '--mode=prepare_latents'], cwd=REPO,
                     env=dict(os.environ, XLA_FLAGS=xla_flags.FAST,
                              FLOWMAP_LOG_DIR=str(tmp_path / 'logs')),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert 'Process 0 of 2' in r.stdout
  one = prepared['root'] / 'z'
  manifest = json.loads((folder / latents.MANIFEST).read_text())
  assert manifest == json.loads((one / latents.MANIFEST).read_text())
  for s in manifest['shards']:
    assert (folder / s['file']).read_bytes() == (one / s['file']).read_bytes(), s['file']


def test_prepare_from_tfds_imagenet_split_over_8_devices(prepared, tmp_path):
  """The tfds source (imagenet2012, mock data) with ADM's crop, batches of 4 split over this test
  process's 8 fake devices (padded to 8), in-process: the records equal the VAE on each image."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  assert jax.local_device_count() == 8
  config = config_io.load(SMOKE)
  with config.unlocked():
    config.data.update(vae=prepared['vae'], path=str(tmp_path / 'z'))
  with tfds.testing.mock_data(num_examples=6):
    manifest = latents.prepare(config)
    icfg = latents.image_config(config.data)
    src = images.source(icfg)
    pictures = np.stack([images.Preprocess(icfg).map(src[i])['image'] for i in range(6)])
    labels = [int(src[i]['label']) for i in range(6)]
  assert manifest['complete'] and manifest['num_images'] == 6
  assert manifest['source']['name'] == 'imagenet2012' and manifest['num_classes'] == 1000
  _, records = _records(tmp_path / 'z')
  module, params = vae.load(prepared['vae'])
  mean, _ = module.apply({'params': params}, images.to_unit_range(pictures), method=module.encode)
  np.testing.assert_allclose(np.stack([r['mean'] for r in records]), mean, rtol=1e-3, atol=1e-4)
  assert [int(r['label']) for r in records] == labels


def _pipeline(config, n, **data):
  d = config.data.copy_and_resolve_references()
  d.update(data)
  it = iter(latents.dataset(d, seed=0, batch_size=4, process_index=0, process_count=1))
  return it, [next(it) for _ in range(n)]


def test_draws_flips_normalisation_and_a_resumed_iterator(prepared):
  config = prepared['config']
  _, records = _records(prepared['root'] / 'z')
  # posterior='mean' without flips: exactly the stored means, times 0.18215.
  _, batches = _pipeline(config, 5, posterior='mean', random_flip=False)
  for b in batches:
    assert b['latent'].dtype == np.float32 and b['latent'].shape == (4, 8, 8, 4)
    for z, y in zip(b['latent'], b['label']):
      match = [r for r in records if np.allclose(z, r['mean'] * np.float32(0.18215), rtol=1e-6)]
      assert len(match) == 1 and match[0]['label'] == y
  # Per-channel standardisation instead of the scale.
  mu, sd = (0.1, -0.2, 0.3, 0.0), (0.5, 1.0, 2.0, 4.0)
  _, scaled = _pipeline(config, 1, posterior='mean', random_flip=False)
  _, standard = _pipeline(config, 1, posterior='mean', random_flip=False, latent_mean=mu,
                          latent_std=sd)
  z = scaled[0]['latent'] / np.float32(0.18215)
  np.testing.assert_allclose(standard[0]['latent'], (z - np.float32(mu)) / np.float32(sd), rtol=1e-5,
                             atol=1e-6)
  d = config.data.copy_and_resolve_references()
  d.update(latent_mean=mu, latent_std=sd)
  np.testing.assert_allclose(latents.to_latent(standard[0]['latent'], d), z, rtol=1e-5, atol=1e-6)
  # posterior='sample' with flips: each example is one of its two posteriors, ε standard normal.
  _, drawn = _pipeline(config, 10, random_flip=True)
  eps, flipped = [], 0
  for b in drawn:
    for z in b['latent'] / np.float32(0.18215):
      cands = [(np.abs((z - r[m]) / r[s]).max(), (z - r[m]) / r[s], m == 'mean_flip')
               for r in records for m, s in (('mean', 'std'), ('mean_flip', 'std_flip'))]
      best = min(cands, key=lambda c: c[0])
      eps.append(best[1])
      flipped += best[2]
  eps = np.concatenate([e.ravel() for e in eps])
  assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05, (eps.mean(), eps.std())
  assert 10 <= flipped <= 30   # of 40 examples, about half
  # The iterator's state (checkpointed with a run) resumes to the same batches, draws included.
  it, _ = _pipeline(config, 3)
  state = it.get_state()
  after = [next(it) for _ in range(4)]   # crosses the epoch of 20 records
  resumed, _ = _pipeline(config, 0)
  resumed.set_state(state)
  for a, b in zip(after, [next(resumed) for _ in range(4)]):
    np.testing.assert_array_equal(a['latent'], b['latent'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_float16_and_bfloat16_round_trip():
  """The stored precision: float16 keeps 11 significant bits (relative error ≤ 2^-11), bfloat16 8."""
  z = np.random.RandomState(0).randn(10_000).astype(np.float32) * 5
  e16, r16 = latents.round_trip_error(z, 'float16')
  eb, rb = latents.round_trip_error(z, 'bfloat16')
  assert np.max(np.abs(z)) * 2 ** -12 * 0.5 < e16 <= np.max(np.abs(z)) * 2 ** -11
  assert e16 * 4 < eb <= np.max(np.abs(z)) * 2 ** -8


def test_latent_itvm_run_end_to_end_with_decoded_grids_and_an_fid_proxy(prepared, tmp_path):
  """--mode fid_stats from the latents' images, then the main job's smoke run (its fm teacher
  trained first into <workdir>/teacher) with FID on random Inception weights: every number finite,
  the grids decoded to 16 px RGB; flowmap_jax.load samples decoded images."""
  weights, stats = tmp_path / 'inception.pickle', tmp_path / 'stats.npz'
  fid_files.write_random_weights(weights)
  fid_on = [f'--config.eval.fid_weights={weights}', f'--config.eval.fid_stats={stats}']
  # XLA's full optimisation: Inception's convolutions run many times faster than at level 0.
  env = dict(os.environ, XLA_FLAGS='')
  r = run_main(*prepared['flags'], *fid_on, '--mode=fid_stats', f'--workdir={tmp_path / "s"}',
               env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  assert np.load(stats)['num_images'] == N
  work = tmp_path / 'run'
  # The student's own FIDs only (its teacher's Euler and ODE go through the same decoding).
  r = run_main(*prepared['flags'], *fid_on, f'--workdir={work}',
               '--config.eval.compare_teacher=False', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((work / 'eval.json').read_text())
  assert set(results['flow_map']) == {'1', '2'} and 'teacher_ode' not in results
  assert all(np.isfinite(v['fid']) and v['fid'] > 0 for v in results['flow_map'].values())
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = np.asarray(Image.open(work / 'plots' / 'samples.png'))
  # 4 rows (1/2/4/8 steps) × 2 columns of 16 px images with 2 px padding: decoded, not 8 px latents.
  assert grid.shape[:2] == (4 * 18 + 2, 2 * 18 + 2), grid.shape
  assert (work / 'teacher' / 'eval.json').exists()
  # flowmap_jax.load: decoded images by default, the model's latents with decode=False.
  import flowmap_jax  # pylint: disable=g-import-not-at-top
  model = flowmap_jax.load(str(work))
  pictures = model.sample(jax.random.key(0), 2, steps=1)
  z = model.sample(jax.random.key(0), 2, steps=1, decode=False)
  assert pictures.shape == (2, 16, 16, 3) and z.shape == (2, 8, 8, 4)
  np.testing.assert_allclose(pictures, model.exp.to_images(z), atol=1e-5)


@pytest.mark.parametrize('case', ['another_vae', 'no_latents', 'other_plan', 'shape', 'bad_vae',
                                  'truncated_vae'])
def test_latent_errors_exit_2_with_one_message(prepared, tmp_path, case):
  flags = list(prepared['flags'])
  mode = ['--mode=prepare_latents']
  if case == 'another_vae':     # a run whose VAE file is not the one its latents were made with
    other = vae_files.write_random_vae(tmp_path / 'other', seed=1)
    flags += [f'--config.data.vae={other}', f'--workdir={tmp_path / "w"}']
    mode, expect = [], 'SHA-256'
  elif case == 'no_latents':
    flags += [f'--config.data.path={tmp_path / "empty"}', f'--workdir={tmp_path / "w"}']
    (tmp_path / 'empty').mkdir()
    mode, expect = [], 'holds no prepared latents'
  elif case == 'other_plan':    # preparing into a folder of latents made with another VAE
    other = vae_files.write_random_vae(tmp_path / 'other', seed=1)
    flags += [f'--config.data.vae={other}']
    expect = 'prepared with another setting (vae_sha256'
  elif case == 'shape':
    flags += [f'--config.data.path={tmp_path / "z"}', '--config.data.latent_shape=(4, 4, 4)']
    expect = 'encodes 16 px images to latents of shape (8, 8, 4)'
  elif case == 'bad_vae':       # a weight missing from the file
    from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
    tensors = load_file(prepared['vae'])
    key = sorted(tensors)[0]
    del tensors[key]
    (tmp_path / 'bad').mkdir()
    shutil.copy(os.path.join(os.path.dirname(prepared['vae']), 'config.json'), tmp_path / 'bad')
    save_file(tensors, str(tmp_path / 'bad' / 'diffusion_pytorch_model.safetensors'))
    flags += [f'--config.data.vae={tmp_path / "bad" / "diffusion_pytorch_model.safetensors"}',
              f'--config.data.path={tmp_path / "z"}']
    expect = key
  else:
    (tmp_path / 'cut').mkdir()
    shutil.copy(os.path.join(os.path.dirname(prepared['vae']), 'config.json'), tmp_path / 'cut')
    cut = tmp_path / 'cut' / 'diffusion_pytorch_model.safetensors'
    cut.write_bytes(open(prepared['vae'], 'rb').read()[:200])
    flags += [f'--config.data.vae={cut}', f'--config.data.path={tmp_path / "z"}']
    expect = 'cannot read VAE weights'
  r = run_main(*flags, *mode)
  assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
  assert expect in r.stderr and 'Traceback' not in r.stderr, r.stderr[-3000:]


def test_latent_config_problems():
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  c = config_io.load(SMOKE)
  p = validate.problems_of(c, num_devices=1, num_processes=1)
  assert any('data.vae is not set' in q for q in p) and any('data.path is not set' in q for q in p)
  with c.unlocked():
    c.data.update(vae='/nonexistent.safetensors', latent_shape=(5, 5, 4), posterior='median',
                  latent_mean=(0.0,), latent_std=(1.0,))
    c.data.images.update(name='npz', store_dtype='float8')
  p = ' | '.join(validate.problems_of(c, num_devices=1, num_processes=1))
  for expect in ["data.vae='/nonexistent.safetensors' does not exist", 'latent size 5 times a power',
                 "data.posterior='median'", "data.images.store_dtype='float8'",
                 'one value per latent channel (4)', 'data.images.path is not set',
                 'not divisible by model.dit.patch_size=2']:
    assert expect in p, (expect, p)


def test_adm_reference_batch_reads_as_distributed(tmp_path):
  """ADM's VIRTUAL_imagenet256_labeled.npz: arr_0 (the images), mu, sigma, mu_s, sigma_s."""
  rng = np.random.RandomState(0)
  a = rng.randn(2048, 2048) * 0.01
  np.savez(tmp_path / 'VIRTUAL_imagenet256_labeled.npz',
           arr_0=rng.randint(0, 256, (4, 8, 8, 3)).astype(np.uint8), mu=rng.randn(2048),
           sigma=a @ a.T, mu_s=rng.randn(1, 7, 7), sigma_s=np.eye(7))
  mu, sigma = fid.load_stats(str(tmp_path / 'VIRTUAL_imagenet256_labeled.npz'))
  assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and mu.dtype == np.float64

