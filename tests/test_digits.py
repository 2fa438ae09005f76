"""The digit classifier's metrics (flowmap_jax/evaluation/digits.py): exact on known cases."""
import jax
import jax.numpy as jnp
import numpy as np

from flowmap_jax.evaluation import digits


def _classifier(reference):
  net = digits.DigitNet(10)
  params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1), jnp.uint8))['params']
  c = {'params': params, 'num_classes': 10, 'reference': reference}
  _, feats = digits.apply_fn(c)(reference)
  mu, sigma = np.mean(np.asarray(feats, np.float64), 0), np.cov(np.asarray(feats, np.float64),
                                                                 rowvar=False)
  return dict(c, feature_mu=mu, feature_sigma=sigma)


def test_the_reference_itself_scores_perfectly():
  rng = np.random.default_rng(0)
  reference = rng.integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
  c = _classifier(reference)
  logits, feats = digits.apply_fn(c)(reference)
  m = digits.metrics(c, np.asarray(logits), np.asarray(feats), reference,
                     labels=np.argmax(logits, -1))
  assert m['accuracy'] == 1.0
  assert abs(m['feature_distance']) < 1e-4
  assert abs(m['energy']) < 1e-6
  # Other images are farther, by both distances; wrong labels are counted wrong.
  other = np.clip(reference.astype(int) + 60, 0, 255).astype(np.uint8)
  logits2, feats2 = digits.apply_fn(c)(other)
  m2 = digits.metrics(c, np.asarray(logits2), np.asarray(feats2), other,
                      labels=(np.argmax(logits2, -1) + 1) % 10)
  assert m2['accuracy'] == 0.0 and m2['feature_distance'] > 1e-3 and m2['energy'] > 1e-3


def test_energy_distance_matches_its_definition():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 1.0
  d = lambda a, b: np.mean(np.linalg.norm(a[:, None] - b[None], axis=-1))
  want = 2 * d(x, y) - d(x, x) - d(y, y)
  np.testing.assert_allclose(digits.energy_distance(x, y, block=3), want, rtol=1e-5)


def test_rgb_and_other_sizes_are_prepared_to_28_gray():
  x = np.full((2, 32, 32, 3), 255, np.uint8)
  p = np.asarray(digits.prepare(jnp.asarray(x)))
  assert p.shape == (2, 28, 28, 1)
  np.testing.assert_allclose(p, 1.0, atol=1e-6)
