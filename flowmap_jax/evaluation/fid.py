"""FID: Inception-v3 pool features (2048-d) and the Fréchet distance between two Gaussians.

The network is the FID variant of Inception-v3 (TF-slim weights as ported by pytorch-fid: average
pools that ignore padding, max pool in the last block), written here in flax. Its weights are read
from a file the user supplies, in the pickled parameter-tree format most JAX codebases use
(`inception_v3_weights_fid.pickle`: {'Conv2d_1a_3x3': {'conv': {'kernel'}, 'bn': {'scale', 'bias',
'mean', 'var'}}, 'Mixed_5b': {'branch1x1': {...}, ...}, ...}); nothing is downloaded.

Images enter as uint8 (B, H, W, 3), are scaled to [-1, 1] and bilinearly resized to 299 × 299.
Statistics (μ, Σ) are float64; the distance ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) is computed in
float64, the trace of the square root from symmetric eigendecompositions (`frechet_distance`).
"""
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

FEATURES = 2048
FULL_FID_SAMPLES = 50_000


class FrozenBatchNorm(nn.Module):
  """Inference batch norm with its statistics as parameters (so they load with the weights)."""
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    mean = self.param('mean', nn.initializers.zeros, (c,))
    var = self.param('var', nn.initializers.ones, (c,))
    return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class BasicConv(nn.Module):
  features: int
  kernel: tuple = (1, 1)
  strides: tuple = (1, 1)
  padding: object = 'VALID'

  @nn.compact
  def __call__(self, x):
    # Full float32 precision on every backend (TPUs and recent GPUs default to reduced-precision
    # matmuls and convolutions), so the features are the float32 features FID is defined on.
    x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding, use_bias=False,
                precision=jax.lax.Precision.HIGHEST, name='conv')(x)
    return nn.relu(FrozenBatchNorm(name='bn')(x))


def _pad(kh, kw):
  return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _conv(name, features, kernel=(1, 1), strides=(1, 1), same=False):
  return BasicConv(features, kernel, strides, _pad(*kernel) if same else 'VALID', name=name)


def _avg_pool_3x3(x):
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, strides=(2, 2), padding='VALID'):
  return nn.max_pool(x, (3, 3), strides, padding=padding)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv('branch1x1', 64)(x)
    b5 = _conv('branch5x5_2', 64, (5, 5), same=True)(_conv('branch5x5_1', 48)(x))
    b3 = _conv('branch3x3dbl_1', 64)(x)
    b3 = _conv('branch3x3dbl_3', 96, (3, 3), same=True)(
        _conv('branch3x3dbl_2', 96, (3, 3), same=True)(b3))
    bp = _conv('branch_pool', self.pool_features)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv('branch3x3', 384, (3, 3), (2, 2))(x)
    bd = _conv('branch3x3dbl_2', 96, (3, 3), same=True)(_conv('branch3x3dbl_1', 64)(x))
    bd = _conv('branch3x3dbl_3', 96, (3, 3), (2, 2))(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = _conv('branch1x1', 192)(x)
    b7 = _conv('branch7x7_1', c)(x)
    b7 = _conv('branch7x7_3', 192, (7, 1), same=True)(_conv('branch7x7_2', c, (1, 7), same=True)(b7))
    bd = _conv('branch7x7dbl_1', c)(x)
    for i, (k, f) in enumerate([((7, 1), c), ((1, 7), c), ((7, 1), c), ((1, 7), 192)]):
      bd = _conv(f'branch7x7dbl_{i + 2}', f, k, same=True)(bd)
    bp = _conv('branch_pool', 192)(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv('branch3x3_2', 320, (3, 3), (2, 2))(_conv('branch3x3_1', 192)(x))
    b7 = _conv('branch7x7x3_1', 192)(x)
    b7 = _conv('branch7x7x3_2', 192, (1, 7), same=True)(b7)
    b7 = _conv('branch7x7x3_3', 192, (7, 1), same=True)(b7)
    b7 = _conv('branch7x7x3_4', 192, (3, 3), (2, 2))(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x)], axis=-1)


class InceptionE(nn.Module):
  max_pool: bool  # the last block pools by max (pytorch-fid's FIDInceptionE_2)

  @nn.compact
  def __call__(self, x):
    b1 = _conv('branch1x1', 320)(x)
    b3 = _conv('branch3x3_1', 384)(x)
    b3 = jnp.concatenate([_conv('branch3x3_2a', 384, (1, 3), same=True)(b3),
                          _conv('branch3x3_2b', 384, (3, 1), same=True)(b3)], axis=-1)
    bd = _conv('branch3x3dbl_2', 384, (3, 3), same=True)(_conv('branch3x3dbl_1', 448)(x))
    bd = jnp.concatenate([_conv('branch3x3dbl_3a', 384, (1, 3), same=True)(bd),
                          _conv('branch3x3dbl_3b', 384, (3, 1), same=True)(bd)], axis=-1)
    pooled = _max_pool_3x3(x, (1, 1), ((1, 1), (1, 1))) if self.max_pool else _avg_pool_3x3(x)
    bp = _conv('branch_pool', 192)(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """uint8 images (B, H, W, 3) -> pool3 features (B, 2048). Grayscale (B, H, W, 1) is repeated to
  three channels, as FID of grayscale sets is computed."""

  @nn.compact
  def __call__(self, images):
    if images.shape[-1] == 1:
      images = jnp.repeat(images, 3, axis=-1)
    x = images.astype(jnp.float32) / 127.5 - 1.0
    # Plain bilinear (half-pixel centres, no antialiasing when shrinking), as pytorch-fid resizes.
    x = jax.image.resize(x, (x.shape[0], 299, 299, 3), method='bilinear', antialias=False)
    x = _conv('Conv2d_1a_3x3', 32, (3, 3), (2, 2))(x)
    x = _conv('Conv2d_2a_3x3', 32, (3, 3))(x)
    x = _conv('Conv2d_2b_3x3', 64, (3, 3), same=True)(x)
    x = _max_pool_3x3(x)
    x = _conv('Conv2d_3b_1x1', 80)(x)
    x = _conv('Conv2d_4a_3x3', 192, (3, 3))(x)
    x = _max_pool_3x3(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    for name, c in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(False, name='Mixed_7b')(x)
    x = InceptionE(True, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


class WeightsMissing(RuntimeError):
  pass


def abstract_params():
  return jax.eval_shape(InceptionV3().init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3), jnp.uint8))['params']


def load_params(path):
  """The Inception parameters from a pickled tree; a clear error if absent or of another shape.
  Keys the FID network does not use (the classifier 'fc', 'AuxLogits', conv biases) are ignored."""
  path = epath.Path(path) if path else None
  if path is None or not path.exists():
    raise WeightsMissing(
        f'FID is off: no Inception weights file at {str(path) if path else "eval.fid_weights (unset)"}. '
        'Nothing is downloaded at run time: put inception_v3_weights_fid.pickle (the pickled '
        'parameter tree of jax-fid and most JAX codebases) on this machine and set '
        '--config.eval.fid_weights=/path/to/inception_v3_weights_fid.pickle.')
  with path.open('rb') as f:
    tree = pickle.load(f)
  problems = []

  def pick(keypath, want):
    node = tree
    for k in keypath:
      key = k.key
      if not isinstance(node, dict) or key not in node:
        problems.append(f'{"/".join(p.key for p in keypath)} missing')
        return np.zeros(want.shape, want.dtype)
      node = node[key]
    value = np.asarray(node, np.float32)
    if value.shape != want.shape:
      problems.append(f'{"/".join(p.key for p in keypath)}: shape {value.shape}, want {want.shape}')
      return np.zeros(want.shape, want.dtype)
    return value

  params = jax.tree_util.tree_map_with_path(pick, abstract_params())
  if problems:
    raise WeightsMissing(f'{path} is not an Inception-v3 FID weights file: '
                         + '; '.join(problems[:5]) + (' …' if len(problems) > 5 else ''))
  return params


def save_params(params, path):
  """Writes a parameter tree in the same pickled format (tests; converting other weights)."""
  with epath.Path(path).open('wb') as f:
    pickle.dump(jax.tree.map(np.asarray, jax.device_get(params)), f)


def feature_fn(params):
  """A jitted uint8 images -> (B, 2048) float32 features."""
  net = InceptionV3()
  return jax.jit(lambda images: net.apply({'params': params}, images))


def statistics(features):
  """(μ, Σ) in float64 of (N, d) features."""
  f = np.asarray(features, np.float64)
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) in float64.

  tr((Σ1 Σ2)^½) is taken from symmetric eigendecompositions: Σ1 Σ2 is similar to
  Σ1^½ Σ2 Σ1^½, which is symmetric positive semi-definite for two covariances, so the trace is
  Σ_i √λ_i over its eigenvalues. pytorch-fid computes the same number with scipy.linalg.sqrtm of
  the non-symmetric product (a complex Schur form), which is several times slower at 2048
  dimensions and needs an eps·I fallback when the product is singular (fewer samples than
  features); here a singular product needs nothing. Eigenvalues below zero are rounding, dropped, up
  to an imaginary part of the trace of 1e-3; beyond it an error (the statistics are not covariances
  of the same feature space)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  diff = mu1 - mu2
  w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  lam = np.linalg.eigvalsh(root1 @ ((sigma2 + sigma2.T) / 2) @ root1)
  # Rounding leaves eigenvalues of a rank-deficient covariance at about -1e-16 of the largest.
  material = lambda e: np.sqrt(np.clip(-e[e < -1e-9 * max(np.abs(e).max(), 1e-300)], 0, None)).sum()
  imaginary = float(material(w) + material(lam))
  if imaginary > 1e-3:
    raise ValueError(f'FID: the matrix square root of Σ1 Σ2 has an imaginary part of {imaginary:.3g} '
                     'in its trace; the two statistics do not describe one feature space.')
  trace_sqrt = float(np.sum(np.sqrt(np.clip(lam, 0, None))))
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def save_stats(path, mu, sigma, num_images, source):
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    np.savez(f, mu=mu, sigma=sigma, num_images=num_images, source=source)


def load_stats(path):
  """(μ, Σ) from a .npz with arrays 'mu' and 'sigma' (ours, or the usual reference files)."""
  path = epath.Path(path) if path else None
  if path is None or not path.exists():
    raise WeightsMissing(
        f'FID is off: no reference statistics at {str(path) if path else "eval.fid_stats (unset)"}. '
        'Write them once with `python -m flowmap_jax.main --config <this config> --workdir <dir> '
        '--mode fid_stats` (it prints the path) and set --config.eval.fid_stats to it.')
  with path.open('rb') as f:
    z = np.load(f)
    return np.asarray(z['mu'], np.float64), np.asarray(z['sigma'], np.float64)


def label(num_samples):
  """'FID' for the standard 50k samples, else a proxy named by its size (not comparable to FID)."""
  return 'FID' if num_samples >= FULL_FID_SAMPLES else f'FID-{num_samples // 1000}k proxy' if (
      num_samples >= 1000) else f'FID-{num_samples} proxy'
