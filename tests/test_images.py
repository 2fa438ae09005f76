"""Images: every image config smoke-trains on mock data and writes a grid; the grain pipeline; the
networks' time derivatives; classifier-free guidance; FID network, statistics and distance."""
import json
import os
import pickle

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
import tensorflow_datasets as tfds

from flowmap_jax import checkpoint
from flowmap_jax import config_io
from flowmap_jax import flow_map
from flowmap_jax import models
from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax import validate
from flowmap_jax.data import images
from flowmap_jax.evaluation import fid
from test_pipeline import REPO

import fid_files
import image_runs
from image_runs import IMAGE_CONFIGS


@pytest.fixture(scope='module')
def runs(image_runs):
  """Every image run of this module (tests/image_runs.py: each config's smoke run, the fm runs being
  the itvm runs' teachers, a stopped and resumed run, a `--mode sample`, a DiT student of a U-Net
  teacher, and FID end to end on random Inception weights), started in a subprocess when the
  session starts (conftest.py) so that it runs beside the other tests; here we wait for it."""
  root, out = image_runs.result(timeout=1500)
  return root, out


def _ok(runs, id_):
  root, out = runs
  assert id_ in out, f'job {id_} did not run'
  assert out[id_]['ok'], out[id_]['error']
  return out[id_]['result']


@pytest.mark.parametrize('name', IMAGE_CONFIGS)
def test_image_config_smoke_trains_and_writes_a_grid(name, runs):
  results = _ok(runs, name)
  workdir = runs[0] / name
  assert results['step'] == 2
  assert 'FID is off' in results['fid_off'] and 'eval.fid_weights' in results['fid_off']
  saved = json.loads((workdir / 'eval.json').read_text())
  assert saved['step'] == 2 and (workdir / 'plots' / 'samples.png').stat().st_size > 0
  if name != 'fm_cifar10':  # whose eval.md the FID test rewrites with FID on
    assert 'FID is off' in (workdir / 'eval.md').read_text()
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()) == ['2']
  assert list((workdir / 'checkpoints' / '2').glob('data/process_0-of-1.json'))  # grain state


@pytest.mark.skipif(not os.path.exists(image_runs.SHARED_MNIST),
                    reason=f'{image_runs.SHARED_MNIST} is absent: no real MNIST on this machine')
def test_lsd_mnist_smoke_trains_on_real_digits(runs):
  """lsd_mnist:smoke on a 512-image subset of real MNIST: one channel from file to grid."""
  results = _ok(runs, 'lsd_mnist')
  assert results['step'] == 2
  config = json.loads((runs[0] / 'lsd_mnist' / 'config.json').read_text())
  assert config['data']['name'] == 'npz' and config['data']['channels'] == 1
  assert (runs[0] / 'lsd_mnist' / 'plots' / 'samples.png').stat().st_size > 0


def test_dit_student_distils_a_unet_teacher(runs):
  """The main job with a DiT: the student's network differs from its teacher's."""
  results = _ok(runs, 'dit')
  assert results['step'] == 2
  assert json.loads((runs[0] / 'dit' / 'config.json').read_text())['model']['name'] == 'dit'


def test_resumed_image_run_sees_the_same_data(runs):
  """2 steps straight (lsd_cifar10's smoke run) == 1 step, stop, 1 more (the grain position comes
  back with the checkpoint)."""
  for id_ in ('lsd_cifar10', 'first_half', 'resumed'):
    _ok(runs, id_)
  c = config_io.load(os.path.join(REPO, 'configs', 'lsd_cifar10.py') + ':smoke')
  exp = state_lib.Experiment(c)
  leaves = []
  for w in ('lsd_cifar10', 'resumed'):
    mngr = checkpoint.manager(runs[0] / w)
    assert mngr.latest_step() == 2
    leaves.append(jax.tree.leaves(jax.device_get(
        checkpoint.restore_latest(mngr, exp.abstract_state()).params)))
    mngr.close()
  for x, y in zip(*leaves):
    np.testing.assert_array_equal(x, y)


def test_mode_sample_writes_image_samples_and_grid(runs):
  assert _ok(runs, 'sample') == ['1 steps', '2 steps']
  workdir = runs[0] / 'lsd_cifar10'
  with np.load(workdir / 'samples.npz') as z:
    assert z['1'].shape == (4, 32, 32, 3) and z['1'].dtype == np.uint8
  assert (workdir / 'plots' / 'samples_2.png').stat().st_size > 0


def test_fid_end_to_end_with_reference_statistics(runs):
  """--mode fid_stats on the (mock) data, then an evaluation with FID on: numbers for the teacher's
  Euler steps and its ODE, labelled as a proxy at this sample count."""
  _ok(runs, 'fid_weights')
  mu, sigma = fid.load_stats(_ok(runs, 'fid_stats'))
  assert mu.shape == (fid.FEATURES,) and sigma.shape == (fid.FEATURES, fid.FEATURES)
  results = _ok(runs, 'fid_eval')
  assert results['metric'] == 'FID-4 proxy' and not results['fid_off']
  scores = [results['teacher_euler']['1']['fid'], results['teacher_euler']['2']['fid'],
            results['teacher_ode']['fid']]
  assert all(np.isfinite(scores)) and all(v > 0 for v in scores), scores
  assert results['teacher_ode']['nfe'] >= 7
  assert 'FID-4 proxy' in (runs[0] / 'fm_cifar10' / 'eval.md').read_text()


def _data_config(name='cifar10', size=32, **kw):
  return ml_collections.ConfigDict(dict(dict(name=name, image_size=size, random_flip=False,
                                             data_dir='', class_conditional=True, num_workers=1),
                                        **kw))


def _first(d, **kw):
  args = dict(seed=0, batch_size=4, process_index=0, process_count=1)
  args.update(kw)
  return next(iter(images.dataset(d, **args)))


@pytest.mark.parametrize('name,size', [('cifar10', 32), ('imagenet2012', 64),
                                       ('imagenet_resized/64x64', 64), ('celeb_a', 64)])
def test_grain_pipeline_shapes_range_and_labels(name, size):
  d = _data_config(name, size, class_conditional=name != 'celeb_a')
  with tfds.testing.mock_data(num_examples=16):
    b = _first(d)
  assert b['image'].shape == (4, size, size, 3) and b['image'].dtype == np.uint8
  assert b['label'].shape == (4,) and b['label'].dtype == np.int32
  assert 0 <= b['label'].min() and b['label'].max() < max(images.DATASETS[name].num_classes, 1)
  x = np.asarray(images.to_unit_range(b['image']))
  assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
  np.testing.assert_array_equal(images.quantize(x), b['image'])  # FID's quantisation inverts it


def test_grain_pipeline_is_deterministic_sharded_and_resumable():
  d = _data_config(random_flip=True)
  with tfds.testing.mock_data(num_examples=32):
    a, again = _first(d), _first(d)
    other_seed = _first(d, seed=1)
    p0 = _first(d, process_count=2)
    p1 = _first(d, process_index=1, process_count=2)
    it = iter(images.dataset(d, seed=0, batch_size=4, process_index=0, process_count=1))
    next(it)
    state = it.get_state()
    expected = next(it)
    resumed = iter(images.dataset(d, seed=0, batch_size=4, process_index=0, process_count=1))
    resumed.set_state(state)
    got = next(resumed)
  np.testing.assert_array_equal(a['image'], again['image'])
  assert not np.array_equal(a['image'], other_seed['image'])
  assert not np.array_equal(p0['image'], p1['image'])
  np.testing.assert_array_equal(expected['image'], got['image'])
  np.testing.assert_array_equal(expected['label'], got['label'])


def test_missing_data_set_says_how_to_prepare_it(tmp_path):
  d = _data_config(data_dir=str(tmp_path / 'nothing_here'))
  with pytest.raises(images.DataNotPrepared, match='tfds build cifar10 --file_format=array_record'):
    images.source(d)


# --------------------------------------------------------------------------- networks


def _tiny(name, num_classes=0, **overrides):
  """A tiny U-Net or DiT; `overrides` go to the network's block, or to the shared fields."""
  m = ml_collections.ConfigDict(dict(
      name=name, dtype='float32', num_fourier=4, max_freq=8.0, remat='none',
      unet=dict(channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,), dropout=0.0),
      dit=dict(size='S', patch_size=4, dropout=0.0)))
  for k, v in overrides.items():
    if k in m:
      m[k] = v
    elif k in m[name]:
      m[name][k] = v
  return models.get(m, sigma=0.5, num_classes=num_classes)


def _perturbed(params, dtype=jnp.float32):
  """params + 0.05 N(0, I), in `dtype`, from one draw over the flattened tree (a draw per leaf
  compiles a random program per leaf shape: seconds on this CPU)."""
  flat, unravel = jax.flatten_util.ravel_pytree(jax.tree.map(lambda a: a.astype(dtype), params))
  return unravel(flat + 0.05 * jax.random.normal(jax.random.key(1), flat.shape, dtype))


@pytest.mark.parametrize('name', ['unet', 'dit'])
def test_jvp_through_image_networks_matches_finite_differences(name):
  net = _tiny(name, num_classes=3)
  with jax.enable_x64(True):
    x = 0.5 * jax.random.normal(jax.random.key(0), (2, 8, 8, 3), jnp.float64)
    s, t, y = jnp.array([0.1, 0.3]), jnp.array([0.6, 0.9]), jnp.array([0, 2])
    params = jax.jit(net.init)(jax.random.key(1), s, t, x, y)['params']
    # Non-zero zero-initialised layers, so every path in the network carries signal.
    params = _perturbed(params, jnp.float64)
    apply_fn = lambda p, s_, t_, x_, y_: net.apply({'params': p}, s_, t_, x_, y_)
    X, dX_dt = flow_map.X_and_dt(apply_fn, params, s, t, x, y)
    _, dX_ds = flow_map.X_and_ds(apply_fn, params, s, t, x, y)
    h = 1e-6
    fd_t = (flow_map.X(apply_fn, params, s, t + h, x, y)
            - flow_map.X(apply_fn, params, s, t - h, x, y)) / (2 * h)
    fd_s = (flow_map.X(apply_fn, params, s + h, t, x, y)
            - flow_map.X(apply_fn, params, s - h, t, x, y)) / (2 * h)
    assert float(jnp.max(jnp.abs(dX_dt))) > 1e-3
    np.testing.assert_allclose(dX_dt, fd_t, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dX_ds, fd_s, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(flow_map.X(apply_fn, params, s, s, x, y), x)


@pytest.mark.parametrize('name', ['unet', 'dit'])
def test_mixed_precision_keeps_float32_params_and_output(name):
  net = _tiny(name, num_classes=3, dtype='bfloat16')
  x, s, y = jnp.ones((2, 8, 8, 3)), jnp.array([0.2, 0.5]), jnp.array([1, 3])  # 3: the null label
  params = net.init(jax.random.key(0), s, s, x, y)['params']
  assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  out = net.apply({'params': params}, s, s + 0.1, x, y)
  assert out.dtype == jnp.float32 and out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


def _residual_bytes(fn, *args):
  """Bytes that `jax.vjp(fn)` keeps for the backward pass (its residuals), traced only."""
  leaves = jax.tree.leaves(jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args))
  return sum(a.size * a.dtype.itemsize for a in leaves)


@pytest.mark.parametrize('name', ['unet', 'dit'])
def test_remat_keeps_parameters_and_gradient_and_keeps_less_for_the_backward(name):
  """model.remat recomputes each block in the backward: the same parameter tree, the same gradient
  of a jvp-based objective (the shape of every flow-map loss), and fewer residuals kept."""
  x = 0.5 * jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  s, t, y = jnp.array([0.1, 0.3]), jnp.array([0.6, 0.9]), jnp.array([0, 3])
  small = dict(size='T', patch_size=2, channel_mult=(1,), attn_resolutions=(8,))
  net = _tiny(name, num_classes=3, **small)
  params = jax.jit(net.init)(jax.random.key(1), s, t, x, y)['params']
  params = _perturbed(params)  # non-zero zero-initialised layers
  grads, kept = {}, {}
  for remat in models.REMAT:  # one parameter tree serves every setting
    net = _tiny(name, num_classes=3, remat=remat, **small)
    apply_fn = lambda p, s_, t_, x_, y_: net.apply({'params': p}, s_, t_, x_, y_)

    def objective(p):
      X, dX_dt = flow_map.X_and_dt(apply_fn, p, s, t, x, y)
      return jnp.mean(X ** 2) + jnp.mean(dX_dt ** 2)

    grads[remat] = jax.jit(jax.grad(objective))(params)
    kept[remat] = _residual_bytes(objective, params)
  for remat in ('full', 'dots'):
    assert jax.tree.structure(grads[remat]) == jax.tree.structure(grads['none'])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 grads[remat], grads['none'])
  assert kept['full'] < 0.6 * kept['none'], kept
  assert kept['full'] <= kept['dots'] < kept['none'], kept


def test_remat_names_are_checked():
  c = config_io.load(os.path.join(REPO, 'configs', 'lsd_cifar10.py') + ':smoke')
  c.model.remat = 'some'
  assert any("model.remat='some' is not known" in p for p in validate.problems_of(c))
  c.model.remat = 'dots'
  assert validate.problems_of(c) == []


def test_classifier_free_guidance_velocity():
  c = config_io.load(os.path.join(REPO, 'configs', 'fm_imagenet64.py') + ':smoke')
  c.data.image_size, c.model.adm.attn_resolutions = 16, (8,)
  exp = state_lib.Experiment(c)
  params = jax.tree.map(lambda a: a + 0.02, exp.init_params(jax.random.key(0)))
  t, x, y = jnp.array([0.3, 0.7]), jax.random.normal(jax.random.key(1), (2, 16, 16, 3)), jnp.array([5, 9])
  v_c = exp.apply_fn(params, t, t, x, y)
  v_u = exp.apply_fn(params, t, t, x, jnp.full_like(y, exp.num_classes))
  np.testing.assert_allclose(teacher_lib.velocity_fn(exp)(params)(t, x, y), v_c, atol=1e-6)
  np.testing.assert_allclose(teacher_lib.velocity_fn(exp, 2.5)(params)(t, x, y), v_u + 2.5 * (v_c - v_u),
                             atol=1e-4)
  assert float(jnp.max(jnp.abs(v_c - v_u))) > 1e-4  # the label matters


# --------------------------------------------------------------------------- FID


def test_fid_network_runs_on_weights_from_a_pickle(tmp_path):
  params = fid_files.random_params()
  path = tmp_path / 'inception_v3_weights_fid.pickle'
  fid.save_params(params, path)
  with open(path, 'rb') as f:  # the format: a plain nested dict of arrays
    raw = pickle.load(f)
  assert set(raw['Mixed_7c']['branch_pool']) == {'conv', 'bn'}
  loaded = fid.load_params(path)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), b)
  imgs = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
  feats = np.asarray(fid.feature_fn(loaded)(imgs))
  assert feats.shape == (3, fid.FEATURES) and np.isfinite(feats).all()
  assert not np.allclose(feats[0], feats[1])
  raw['Mixed_5b'].pop('branch1x1')
  with open(path, 'wb') as f:
    pickle.dump(raw, f)
  with pytest.raises(fid.WeightsMissing, match='Mixed_5b/branch1x1'):
    fid.load_params(path)


def test_missing_fid_files_give_the_clear_message(tmp_path):
  with pytest.raises(fid.WeightsMissing, match='eval.fid_weights'):
    fid.load_params('')
  with pytest.raises(fid.WeightsMissing, match='--mode fid_stats'):
    fid.load_stats(str(tmp_path / 'none.npz'))


def test_frechet_distance_matches_scipy_reference_on_known_gaussians():
  rng = np.random.RandomState(0)
  d = 6
  A, B = rng.randn(d, d), rng.randn(d, d)
  s1, s2 = A @ A.T + 0.1 * np.eye(d), B @ B.T + 0.1 * np.eye(d)
  m1, m2 = rng.randn(d), rng.randn(d)
  # Reference: tr((Σ1 Σ2)^½) = tr((Σ1^½ Σ2 Σ1^½)^½), through scipy's symmetric square roots.
  r1 = scipy.linalg.sqrtm(s1).real
  ref = (np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2)
         - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real))
  assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-9)
  assert fid.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)
  # Isotropic Gaussians: ‖μ1 − μ2‖² + d (σ1 − σ2)².
  assert fid.frechet_distance(m1, 4 * np.eye(d), m2, np.eye(d)) == pytest.approx(
      np.sum((m1 - m2) ** 2) + d, rel=1e-9)


def test_frechet_distance_equals_pytorch_fids_sqrtm_with_fewer_samples_than_features():
  """pytorch-fid's computation (scipy.linalg.sqrtm of Σ1 Σ2, eps·I on both when the product is
  singular) on a rank-deficient sample covariance: the eigendecomposition gives the same FID."""
  rng = np.random.RandomState(1)
  d = 256
  f1, f2 = rng.randn(10, d), 1.2 * rng.randn(300, d) + 0.1
  m1, s1, m2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
  with np.errstate(all='ignore'):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all():
    offset = np.eye(d) * 1e-6
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  ref = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
  assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_warns_of_nothing_and_raises_on_a_material_imaginary_part():
  import warnings  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(2)
  A = rng.randn(5, 5)
  s = A @ A.T + 0.1 * np.eye(5)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # no deprecated SciPy argument, no complex-cast warning
    assert fid.frechet_distance(np.zeros(5), s, np.zeros(5), s) == pytest.approx(0.0, abs=1e-8)
  # Σ2 with a negative eigenvalue: (Σ1 Σ2)^½ has an imaginary diagonal of 1, not float noise.
  with pytest.raises(ValueError, match='imaginary part of 1'):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


def _bilinear_half_pixel(x, size):
  """Bilinear resize of (H, W) with half-pixel centres and no antialiasing (PyTorch's
  F.interpolate(mode='bilinear', align_corners=False)), in numpy."""
  def weights(n_in, n_out):
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = np.zeros((n_out, n_in))
    w[np.arange(n_out), i0] += 1 - (src - i0)
    w[np.arange(n_out), i1] += src - i0
    return w
  return weights(x.shape[0], size) @ x @ weights(x.shape[1], size).T


@pytest.mark.parametrize('side', [32, 512])
def test_fid_resize_is_plain_bilinear_up_and_down(side):
  """At 512 px a resize that antialiases differs from pytorch-fid's by up to 2 in pool3 features;
  ours is the plain bilinear resize at every size."""
  img = np.random.RandomState(side).rand(side, side).astype(np.float32)
  ours = jax.image.resize(jnp.asarray(img)[None, :, :, None], (1, 299, 299, 1), method='bilinear',
                          antialias=False)[0, :, :, 0]
  reference = _bilinear_half_pixel(img.astype(np.float64), 299)
  np.testing.assert_allclose(ours, reference, atol=1e-4)  # float32 accumulation
  if side > 299:  # what an antialiasing resize would have given instead
    smoothed = jax.image.resize(jnp.asarray(img)[None, :, :, None], (1, 299, 299, 1),
                                method='bilinear')[0, :, :, 0]
    assert float(np.max(np.abs(smoothed - reference))) > 0.05
  src = open(fid.__file__).read()
  assert "method='bilinear', antialias=False" in src and 'Precision.HIGHEST' in src


def test_fid_statistics_round_trip_and_labels(tmp_path):
  feats = np.random.RandomState(1).randn(500, 4)
  mu, sigma = fid.statistics(feats)
  fid.save_stats(tmp_path / 's.npz', mu, sigma, 500, 'test')
  mu2, sigma2 = fid.load_stats(str(tmp_path / 's.npz'))
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sigma, sigma2)
  assert fid.label(50_000) == 'FID' and fid.label(5000) == 'FID-5k proxy'


def test_checkpoint_restores_the_data_position_and_survives_its_loss(tmp_path, caplog):
  """The grain position comes back with the state; a position that cannot come back (here: its
  files gone, as after a change of process count) costs the data order only, never the state."""
  import grain  # pylint: disable=g-import-not-at-top
  exp = state_lib.Experiment(config_io.load(os.path.join(REPO, 'configs', 'fm_checkerboard.py') + ':smoke'))
  state = exp.init_state()
  make_iter = lambda: iter(grain.MapDataset.range(100).shuffle(seed=3).batch(4).to_iter_dataset())
  it = make_iter()
  next(it), next(it)
  mngr = checkpoint.manager(tmp_path)
  checkpoint.save(mngr, state, it)
  mngr.wait_until_finished()
  expected = next(it)
  resumed = make_iter()
  restored = checkpoint.restore_latest(mngr, exp.abstract_state(), resumed)
  np.testing.assert_array_equal(next(resumed), expected)
  for f in (tmp_path / 'checkpoints' / '0' / 'data').iterdir():
    f.unlink()
  fresh = make_iter()
  with caplog.at_level('WARNING'):
    again = checkpoint.restore_latest(mngr, exp.abstract_state(), fresh)
  mngr.close()
  assert again is not None and int(again.step) == int(restored.step) == 0
  assert 'data order started over' in caplog.text
  assert (tmp_path / 'checkpoints' / '0').exists()  # not moved aside as unreadable
  np.testing.assert_array_equal(next(fresh), next(make_iter()))
