"""A digit classifier as a quality measure that needs no download (docs/metrics.md, "Digits").

`tools/train_digit_classifier.py` trains `DigitNet` once on the MNIST training set and writes one file
(its weights, the mean and covariance of its penultimate features over the test set, and a subset of
the test images); `eval.classifier` names that file. For samples of a run it gives:
- `accuracy`: the fraction of class-conditional samples classified as the digit they were asked for;
- `feature_distance`: the Fréchet distance between Gaussians fitted to the penultimate features of
  the samples and of the test set (the form of FID, in this classifier's 128 features: not FID, and
  not comparable to it);
- `energy`: the energy distance in pixel space ([-1, 1] pixels, flattened) to the stored test images.
"""
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowmap_jax.evaluation import fid as fid_lib

SIZE = 28   # the classifier's input: 28×28 grayscale; other samples are resized and averaged to it


class DigitNet(nn.Module):
  """Two conv blocks (32, 64 channels, 3×3, max-pool), a 128-unit penultimate layer, logits."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, images):
    x = prepare(images)
    for c in (32, 64):
      x = nn.relu(nn.Conv(c, (3, 3))(x))
      x = nn.relu(nn.Conv(c, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    features = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(features), features


def prepare(images):
  """uint8 (B, H, W, C) -> float (B, 28, 28, 1) in [-1, 1]: channels averaged, resized."""
  x = images.astype(jnp.float32) / 127.5 - 1.0
  x = jnp.mean(x, axis=-1, keepdims=True)
  if x.shape[1:3] != (SIZE, SIZE):
    x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 1), method='bilinear')
  return x


class ClassifierMissing(RuntimeError):
  pass


def save(path, params, feature_mu, feature_sigma, reference, num_classes, test_accuracy, source):
  with open(path, 'wb') as f:
    pickle.dump({'params': jax.tree.map(np.asarray, params), 'feature_mu': feature_mu,
                 'feature_sigma': feature_sigma, 'reference': reference,
                 'num_classes': int(num_classes), 'test_accuracy': float(test_accuracy),
                 'source': source}, f)


def load(path):
  """The file tools/train_digit_classifier.py writes, as a dict; ClassifierMissing says why not."""
  try:
    with open(path, 'rb') as f:
      c = pickle.load(f)
  except FileNotFoundError:
    raise ClassifierMissing(
        f'No digit classifier at eval.classifier={path!r}: make one with `python '
        'tools/train_digit_classifier.py --train mnist_train.npz --test mnist_test.npz --out '
        f'{path}` (a few minutes on a CPU).') from None
  missing = {'params', 'feature_mu', 'feature_sigma', 'reference', 'num_classes'} - set(c)
  if missing:
    raise ClassifierMissing(f'{path} is not a digit classifier file (no {sorted(missing)}).')
  return c


def apply_fn(classifier):
  """jit of uint8 images -> (logits, penultimate features)."""
  net = DigitNet(classifier['num_classes'])
  params = classifier['params']
  return jax.jit(lambda images: net.apply({'params': params}, images))


def energy_distance(x, y, block=500):
  """2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ between two sets of flattened images (any sizes)."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)   # float64: the three terms nearly cancel
  y = np.asarray(y, np.float64).reshape(len(y), -1)

  def mean_dist(a, b):
    total = 0.0
    for i in range(0, len(a), block):
      blk = a[i:i + block]
      sq = (blk ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * blk @ b.T
      total += np.sqrt(np.maximum(sq, 0.0)).sum()
    return total / (len(a) * len(b))

  return float(2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y))


def metrics(classifier, logits, features, pixels, labels=None):
  """accuracy (when `labels`, the requested classes, are given), feature_distance and energy of
  the samples whose classifier outputs and uint8 pixels these are."""
  out = {}
  if labels is not None:
    out['accuracy'] = float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))
  mu, sigma = fid_lib.statistics(np.asarray(features, np.float64))
  out['feature_distance'] = fid_lib.frechet_distance(mu, sigma, classifier['feature_mu'],
                                                     classifier['feature_sigma'])
  reference = np.asarray(prepare(jnp.asarray(classifier['reference'])))
  samples = np.asarray(prepare(jnp.asarray(pixels[:len(reference)])))
  out['energy'] = energy_distance(samples, reference)
  return out
