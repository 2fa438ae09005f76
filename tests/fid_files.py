"""Random Inception-v3 FID weights for tests, in the pickled format `fid.load_params` reads.

Drawn as flax initialises the network (LeCun-normal convolutions, identity batch norms) but without
running it: `InceptionV3().init` runs the network's forward at 299 px, whose compilation took
25 to 59 s of the suite each time a test wrote weights. The FID plumbing needs weights of the right
names and shapes whose features are finite and differ between images, not trained ones.
"""
import jax
import numpy as np

from flowmap_jax.evaluation import fid


def random_params(seed=0):
  """The FID network's parameter tree: kernels N(0, 1/fan_in), batch norms the identity."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      return (rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(
          np.float32)
    return (np.ones if name in ('scale', 'var') else np.zeros)(leaf.shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, fid.abstract_params())


def write_random_weights(path, seed=0):
  fid.save_params(random_params(seed), str(path))
  return str(path)
