"""Networks v_θ(s, t, x | y) by name (`config.model.name`).

Networks: `mlp` (2-D), `unet` (EDM's DDPM++, SongUNet), `adm` (EDM's ADM, DhariwalUNet), `dit`.
Every network is called as `module.apply(variables, s, t, x, y, train=...)`: s, t of shape (B,), y the
labels (None when unconditional), `train` switching dropout on.
"""
import jax.numpy as jnp

from flowmap_jax.models import attention
from flowmap_jax.models import dit
from flowmap_jax.models import embeddings
from flowmap_jax.models import layers
from flowmap_jax.models.dit import DiT
from flowmap_jax.models.mlp import ACTIVATIONS, MLP
from flowmap_jax.models.unet import DhariwalUNet, SongUNet
from flowmap_jax.models.weighting import LossWeighting

MODELS = ('mlp', 'unet', 'adm', 'dit')  # unet: EDM's DDPM++ (SongUNet); adm: EDM's DhariwalUNet
DIT_SIZES = tuple(dit.SIZES)
REMAT = tuple(layers.REMAT)   # model.remat: which activations a block keeps for the backward
ATTENTIONS = attention.ATTENTIONS   # model.attention: how the U-Nets and the DiT compute attention
# model.dit.time_embedding: our Fourier features of (s, t − s), or SiT's embedder (docs/sit.md).
TIME_EMBEDDINGS = embeddings.TIME_EMBEDDINGS
# None: computations in the inputs' dtype (float32 in training, float64 in the derivative tests).
DTYPES = {'float32': None, 'bfloat16': jnp.bfloat16}


def get(config_model, sigma, num_classes=0):
  """The flax Module named by `config_model.name`, built from its block (`model.mlp`, `model.unet`
  or `model.dit`) and the fields every network shares (time features, dtype, remat, attention;
  a config saved before model.attention existed computed 'xla')."""
  m = config_model
  if m.name not in MODELS:
    raise ValueError(f'Unknown model.name {m.name!r}; known: {MODELS}.')
  net = m[m.name]
  if m.name == 'mlp':
    return MLP(width=net.width, depth=net.depth, activation=net.activation,
               num_fourier=m.num_fourier, max_freq=m.max_freq, sigma=sigma)
  common = dict(dropout=net.dropout, num_classes=num_classes, num_fourier=m.num_fourier,
                max_freq=m.max_freq, sigma=sigma, dtype=DTYPES[m.dtype], remat=m.remat,
                attention=m.get('attention', 'xla'))
  if m.name in ('unet', 'adm'):
    net_class = SongUNet if m.name == 'unet' else DhariwalUNet
    return net_class(channels=net.channels, channel_mult=tuple(net.channel_mult),
                     num_blocks=net.num_blocks, attn_resolutions=tuple(net.attn_resolutions),
                     **common)
  # A config saved before model.dit.time_embedding existed embedded time by our Fourier features.
  return DiT(size=net.size, patch_size=net.patch_size, qk_norm=net.get('qk_norm', False),
             time_embedding=net.get('time_embedding', 'fourier'), **common)


def dropout_rate(config_model):
  """The network's dropout rate (0 for the MLP, which has none)."""
  return config_model[config_model.name].get('dropout', 0.0)
