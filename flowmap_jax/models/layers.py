"""Layers the image networks share: rematerialisation, GroupNorm, dtype casts, and DiT's
conditioning vector (attention has its own module, models/attention.py)."""
import flax.linen as nn
import jax

from flowmap_jax.models.embeddings import SiTTimeEmbedding, TwoTimeEmbedding

# Rematerialisation of each residual/transformer block (`jax.checkpoint` through `nn.remat`): the
# backward pass (and the jvp's backward) recomputes a block's activations instead of keeping them.
# 'full' keeps only each block's inputs; 'dots' also keeps matmul outputs without batch dimensions
# (weights-only products), the usual transformer compromise; 'none' keeps everything.
REMAT = {'none': None, 'full': jax.checkpoint_policies.nothing_saveable,
         'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_block(block, remat):
  """`block` (a Module class called as (x, emb, train)) under `jax.checkpoint` with the named policy
  of `REMAT` ('none': unchanged). `train` (argument 3, counting self) stays static. Callers name
  the blocks, since the wrapper's class name would otherwise rename their parameters."""
  if remat == 'none':
    return block
  return nn.remat(block, static_argnums=(3,), policy=REMAT[remat])


def group_norm(channels, dtype, eps=1e-6, name=None):
  """GroupNorm with min(32, C/4) groups (EDM's rule); statistics in float32 under mixed precision,
  else in the inputs' dtype (float64 in the derivative tests)."""
  return nn.GroupNorm(num_groups=min(32, channels // 4), epsilon=eps, dtype=dtype,
                      force_float32_reductions=dtype is not None, name=name)


def cast(x, dtype):
  """x in the activation dtype (None: left as it is)."""
  return x if dtype is None else x.astype(dtype)


def conditioning(module, s, t, y, dim, kernel_init=nn.initializers.lecun_normal(),
                 embed_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)):
  """The conditioning vector silu(emb(s, t − s) + emb(y)): the label y of a class-conditional network
  through an embedding table with one extra row (the dropped label of classifier-free guidance).
  `kernel_init` and `embed_init` initialise the time MLP and the table. emb(s, t − s) is our
  Fourier one, or SiT's where the module's `time_embedding` is 'sit' (embeddings.SiTTimeEmbedding:
  SiT's embedder of s plus a zero-initialised one of t − s, docs/sit.md)."""
  if getattr(module, 'time_embedding', 'fourier') == 'sit':
    emb = SiTTimeEmbedding(dim, kernel_init=kernel_init, name='time_embedding')(s, t)
  else:
    emb = TwoTimeEmbedding(dim, num=module.num_fourier, max_freq=module.max_freq,
                           kernel_init=kernel_init, name='time_embedding')(s, t)
  if module.num_classes:
    if y is None:
      raise ValueError(f'{type(module).__name__} is class-conditional (num_classes='
                       f'{module.num_classes}) but got no labels y.')
    emb = emb + nn.Embed(module.num_classes + 1, dim, embedding_init=embed_init,
                         name='label_embedding')(y)
  return cast(nn.silu(emb), module.dtype)
