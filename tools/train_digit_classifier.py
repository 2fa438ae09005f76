"""Trains the digit classifier of eval.classifier once (flowmap_jax/evaluation/digits.py).

  python tools/train_digit_classifier.py --train mnist_train.npz --test mnist_test.npz \
      --out digits.pickle

Reads two `.npz` files with `images` uint8 (N, 28, 28) and `labels` (the format of data.name='npz'),
trains DigitNet with Adam (random shifts of up to 2 pixels), and writes --out: its weights, the mean
and covariance of its penultimate features over the whole test set (the reference of
`feature_distance`), --reference test images (the reference of the pixel energy distance) and its test
accuracy, which it prints. The file is yours: it is never committed.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowmap_jax.evaluation import digits
from flowmap_jax.evaluation import fid as fid_lib


def load(path):
  with np.load(path) as f:
    images, labels = f['images'], f['labels'].astype(np.int32)
  return (images[..., None] if images.ndim == 3 else images), labels


def shift(rng, images, max_shift=2):
  """Each image moved by up to max_shift pixels in each direction (zero fill)."""
  out = np.zeros_like(images)
  h, w = images.shape[1:3]
  for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, (len(images), 2))):
    out[i, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = images[
        i, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--train', required=True)
  ap.add_argument('--test', required=True)
  ap.add_argument('--out', required=True)
  ap.add_argument('--steps', type=int, default=3000)
  ap.add_argument('--batch', type=int, default=128)
  ap.add_argument('--reference', type=int, default=2000, help='test images kept for the energy')
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args()

  x_train, y_train = load(args.train)
  x_test, y_test = load(args.test)
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  net = digits.DigitNet(num_classes)
  params = net.init(jax.random.key(args.seed), jnp.zeros((1, 28, 28, 1), jnp.uint8))['params']
  tx = optax.adam(optax.cosine_decay_schedule(1e-3, args.steps))
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, images, labels):
    def loss_fn(p):
      logits, _ = net.apply({'params': p}, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  rng = np.random.default_rng(args.seed)
  t0 = time.time()
  for i in range(args.steps):
    idx = rng.integers(0, len(x_train), args.batch)
    params, opt, loss = step(params, opt, shift(rng, x_train[idx]), y_train[idx])
    if i % 500 == 0 or i == args.steps - 1:
      print(f'step {i}: loss {float(loss):.4f} ({time.time() - t0:.0f} s)', flush=True)

  apply = jax.jit(lambda images: net.apply({'params': params}, images))
  logits, feats = zip(*[apply(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)])
  logits, feats = np.concatenate(logits), np.concatenate(feats)
  accuracy = float(np.mean(np.argmax(logits, -1) == y_test))
  mu, sigma = fid_lib.statistics(feats)
  reference = x_test[np.random.default_rng(args.seed + 1).permutation(len(x_test))[:args.reference]]
  digits.save(args.out, params, mu, sigma, reference, num_classes, accuracy,
              source=f'trained on {args.train} ({len(x_train)} images), {args.steps} steps; '
                     f'reference: {args.test}')
  print(f'test accuracy {accuracy:.4f}; wrote {args.out}')


if __name__ == '__main__':
  main()
