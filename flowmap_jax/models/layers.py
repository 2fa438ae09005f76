"""Layers the image networks share: rematerialisation, attention, GroupNorm, dtype casts, and DiT's
conditioning vector."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from flowmap_jax.models.embeddings import TwoTimeEmbedding

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


def attention(q, k, v):
  """Softmax attention over the token axis; q, k, v: (B, N, heads, d). Logits in at least float32
  (bfloat16 activations), float64 where the inputs are."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / jnp.sqrt(q.shape[-1])
  weights = nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


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
  `kernel_init` and `embed_init` initialise the time MLP and the table."""
  emb = TwoTimeEmbedding(dim, num=module.num_fourier, max_freq=module.max_freq,
                         kernel_init=kernel_init, name='time_embedding')(s, t)
  if module.num_classes:
    if y is None:
      raise ValueError(f'{type(module).__name__} is class-conditional (num_classes='
                       f'{module.num_classes}) but got no labels y.')
    emb = emb + nn.Embed(module.num_classes + 1, dim, embedding_init=embed_init,
                         name='label_embedding')(y)
  return cast(nn.silu(emb), module.dtype)
