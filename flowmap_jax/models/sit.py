"""SiT's weights (Ma et al. 2024; willisma/SiT `models.py`, class `SiT`) as the parameters of our
DiT with `time_embedding='sit'`: docs/sit.md.

SiT is DiT's network trained as a flow with the linear interpolant. Its state dict differs from our
parameter tree in names and layouts only (torch linears store (out, in), the patch Conv2d
(out, in, p, p)), with three exceptions, each handled here:
- `pos_embed`, the fixed sine-cosine position embedding, is a (frozen) parameter there and computed
  here (`dit.sincos_2d`): it is checked equal, not copied;
- the released 256 px weights have learn_sigma=True, an output layer of 2·p²·C channels of which
  SiT's `forward` keeps the first C per pixel (the velocity; `x, _ = x.chunk(2, dim=1)`): the
  conversion keeps those rows and drops the learned-σ half;
- our second time embedding (of t − s) has no counterpart: it stays at its initialisation, last
  layer zero (embeddings.SiTTimeEmbedding).
`convert` checks every key and shape and raises SiTWeightsError, one line naming what is wrong.
This module needs no torch: tools/convert_sit.py reads the `.pt` file and hands over numpy arrays.
"""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flowmap_jax.models import dit

# The parameter of ours each SiT tensor is, by our path (blocks: per DiTBlock_i, SiT's blocks.i).
_LINEARS = {('time_embedding', 'embed_s', 'Dense_0'): 't_embedder.mlp.0',
            ('time_embedding', 'embed_s', 'Dense_1'): 't_embedder.mlp.2',
            ('Dense_0',): 'final_layer.adaLN_modulation.1',
            ('Dense_1',): 'final_layer.linear'}
_BLOCK_LINEARS = {'Dense_0': 'adaLN_modulation.1', 'Dense_1': 'attn.qkv', 'Dense_2': 'attn.proj',
                  'Dense_3': 'mlp.fc1', 'Dense_4': 'mlp.fc2'}
# Ours only: the embedder of t − s (its last layer zero, so the network starts as SiT's).
SECOND_TIME = ('time_embedding', 'embed_t_minus_s')
POS_EMBED_TOLERANCE = 1e-5   # float32 rounding of the same float64 table


class SiTWeightsError(ValueError):
  """A SiT state dict that does not fit our DiT; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a SiT state dict says about its network."""
  size: str            # our dit.SIZES name (SiT-S/B/L/XL are DiT's sizes)
  width: int
  depth: int
  heads: int
  patch_size: int
  channels: int        # latent channels C
  latent_size: int     # input side (32 for 256 px)
  num_classes: int     # labels, without the null label of guidance
  learn_sigma: bool    # the output layer has the learned-σ half (dropped)

  def describe(self):
    return (f'SiT-{self.size}/{self.patch_size} ({self.width} wide, {self.depth} blocks, '
            f'{self.heads} heads) on {self.latent_size}×{self.latent_size}×{self.channels} '
            f'latents, {self.num_classes} classes, learn_sigma={self.learn_sigma}')


def _listed(items, limit=4):
  items = sorted(items)
  more = f' and {len(items) - limit} more' if len(items) > limit else ''
  return ', '.join(items[:limit]) + more


def _shape(state_dict, key, ndim, source):
  if key not in state_dict:
    raise SiTWeightsError(f'{source}: missing key {key} (not a SiT state dict?)')
  shape = tuple(np.shape(state_dict[key]))
  if len(shape) != ndim:
    raise SiTWeightsError(f'{source}: {key} has shape {shape}, a SiT one has {ndim} dimensions')
  return shape


def spec_of(state_dict, source='the checkpoint'):
  """The network a SiT state dict describes: its patch embedding, position embedding, label table,
  block count and output layer (every other shape is checked by `convert`)."""
  width, channels, p, p2 = _shape(state_dict, 'x_embedder.proj.weight', 4, source)
  _, tokens, _ = _shape(state_dict, 'pos_embed', 3, source)
  rows, _ = _shape(state_dict, 'y_embedder.embedding_table.weight', 2, source)
  out, _ = _shape(state_dict, 'final_layer.linear.weight', 2, source)
  depth = len({m.group(1) for m in map(re.compile(r'^blocks\.(\d+)\.').match, state_dict) if m})
  grid = int(round(tokens ** 0.5))
  if p != p2 or grid * grid != tokens:
    raise SiTWeightsError(f'{source}: x_embedder.proj.weight {(width, channels, p, p2)} and '
                          f'pos_embed with {tokens} tokens are not a square patch grid')
  size = next((name for name, (w, d, _) in dit.SIZES.items() if (w, d) == (width, depth)), None)
  if size is None:
    raise SiTWeightsError(f'{source}: a SiT {width} wide with {depth} blocks is none of the DiT '
                          f'sizes {dict((k, v[:2]) for k, v in dit.SIZES.items())}')
  if out not in (p * p * channels, 2 * p * p * channels):
    raise SiTWeightsError(f'{source}: final_layer.linear.weight has {out} rows; a SiT with patch '
                          f'{p} and {channels} channels has {p * p * channels} (learn_sigma=False)'
                          f' or {2 * p * p * channels} (learn_sigma=True)')
  return Spec(size=size, width=width, depth=depth, heads=dit.SIZES[size][2], patch_size=p,
              channels=channels, latent_size=grid * p, num_classes=rows - 1,
              learn_sigma=out == 2 * p * p * channels)


def sit_key(path):
  """SiT's state-dict key prefix of our parameter path (without 'weight'/'bias'), or None."""
  if path[0].startswith('DiTBlock_') and path[1] in _BLOCK_LINEARS:
    return f'blocks.{path[0][len("DiTBlock_"):]}.{_BLOCK_LINEARS[path[1]]}'
  if path == ('Conv_0',):
    return 'x_embedder.proj'
  if path == ('label_embedding',):
    return 'y_embedder.embedding_table'
  return _LINEARS.get(tuple(path))


def _torch_shape(path, leaf, shape, spec):
  """The shape SiT stores for our parameter `path/leaf` of `shape` (its output layer with the
  learned-σ half where the checkpoint has one)."""
  factor = 2 if path == ('Dense_1',) and spec.learn_sigma else 1
  if leaf == 'bias':
    return (shape[0] * factor,)
  if len(shape) == 4:   # patch embedding: ours (p, p, C, D), torch's Conv2d (D, C, p, p)
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == 'embedding':
    return tuple(shape)
  return (shape[1] * factor, shape[0])


def _velocity_half(array, spec):
  """SiT's output rows ordered (p, q, channel) per token: the first C channels, SiT's velocity."""
  p, c = spec.patch_size, spec.channels
  lead = array.shape[1:]
  return array.reshape((p, p, 2 * c) + lead)[:, :, :c].reshape((p * p * c,) + lead)


def _from_torch(path, leaf, array, spec):
  if path == ('Dense_1',) and spec.learn_sigma:
    array = _velocity_half(array, spec)
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2 and leaf == 'kernel':
    return array.T
  return array


def network(spec):
  """Our DiT that runs `spec`'s SiT (σ0 = 1: SiT's network sees x as it is)."""
  return dit.DiT(size=spec.size, patch_size=spec.patch_size, num_classes=spec.num_classes,
                 sigma=1.0, time_embedding='sit')


def parameter_shapes(spec):
  """{our path tuple: shape} of `network(spec)`'s parameters, from a trace (nothing computed)."""
  side = spec.latent_size
  shapes = jax.eval_shape(network(spec).init, jax.random.key(0), jnp.zeros(1), jnp.zeros(1),
                          jax.ShapeDtypeStruct((1, side, side, spec.channels), jnp.float32),
                          jnp.zeros((1,), jnp.int32))['params']
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def expected_keys(param_shapes, spec):
  """{SiT key: (our path, our leaf, SiT's shape)} for our flat parameter shapes {path tuple: shape}
  (the second time embedding excluded), and pos_embed (path None)."""
  tokens = (spec.latent_size // spec.patch_size) ** 2
  expected = {'pos_embed': (None, None, (1, tokens, spec.width))}
  unmapped = []
  for full_path, shape in param_shapes.items():
    path, leaf = tuple(full_path[:-1]), full_path[-1]
    if path[:2] == SECOND_TIME:
      continue
    prefix = sit_key(path)
    if prefix is None:
      unmapped.append('/'.join(full_path))
      continue
    expected[f'{prefix}.{"bias" if leaf == "bias" else "weight"}'] = (
        path, leaf, _torch_shape(path, leaf, tuple(shape), spec))
  if unmapped:
    raise SiTWeightsError(f'our DiT has parameters SiT has none for: {_listed(unmapped)} (convert '
                          'with model.dit.qk_norm=False)')
  return expected


def convert(state_dict, source='the checkpoint'):
  """SiT's state dict {key: array} → ({our path tuple: float32 array}, Spec): the parameters of
  `network(spec)` but the second time embedding (SiT has none). Every key must be expected, every
  expected key given, every shape SiT's; otherwise SiTWeightsError names the missing, unexpected
  and misshapen keys and `source`."""
  spec = spec_of(state_dict, source)
  expected = expected_keys(parameter_shapes(spec), spec)
  problems = []
  missing = [k for k in expected if k not in state_dict]
  unexpected = [k for k in state_dict if k not in expected]
  if missing:
    problems.append(f'missing keys {_listed(missing)}')
  if unexpected:
    problems.append(f'unexpected keys {_listed(unexpected)}')
  misshapen = [f'{k} {tuple(np.shape(state_dict[k]))} (expected {shape})'
               for k, (_, _, shape) in expected.items()
               if k in state_dict and tuple(np.shape(state_dict[k])) != shape]
  if misshapen:
    problems.append(f'wrong shapes: {_listed(misshapen)}')
  if problems:
    raise SiTWeightsError(f'{source} ({spec.describe()}): ' + '; '.join(problems))
  grid = spec.latent_size // spec.patch_size
  pos_error = float(np.max(np.abs(np.asarray(state_dict['pos_embed'], np.float64)[0]
                                  - dit.sincos_2d(grid, spec.width))))
  if not pos_error <= POS_EMBED_TOLERANCE:
    raise SiTWeightsError(f'{source}: pos_embed differs from the fixed sine-cosine embedding SiT '
                          f'initialises by {pos_error:.3g} (max abs): our DiT computes that one '
                          'and cannot take another')
  params = {}
  for key, (path, leaf, _) in expected.items():
    if path is not None:
      array = np.asarray(state_dict[key], np.float32)
      params[path + (leaf,)] = _from_torch(path, leaf, array, spec)
  return params, spec
