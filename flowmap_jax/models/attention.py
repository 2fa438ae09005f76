"""Softmax attention over the token axis, chosen by name (`model.attention`; docs/attention.md).

- 'xla': the plain computation, softmax(q kᵀ/√d) v, whose B·H·N² logits XLA materialises, and
  autodiff again for the tangent and for the backward of the tangent.
- 'blockwise': the same function as a flash-style online softmax over blocks of keys with its own
  JVP rule (docs/attention.md §2, eq. 4), so that `jax.jvp` (every loss with a time derivative) and
  `jax.grad` through that jvp (lmd, emd, lsd, esd) keep O(N·block) memory per layer: no N×N matrix
  of the value, the tangent or their backward is ever stored, only one block of one layer at a time.

The fast attention kernels of JAX (cuDNN's, Pallas flash and splash) are `custom_vjp` functions,
which `jax.jvp` cannot go through; this one is a `custom_jvp` written in ordinary JAX ops, so it can
be both pushed forward and transposed.

q, k, v: (B, N, heads, d). Logits, softmax statistics and sums in float32 for bfloat16 inputs (the
probabilities meet v in v's dtype, as the plain path does), float64 for float64 inputs.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

ATTENTIONS = ('xla', 'blockwise')   # model.attention

# Keys per block of 'blockwise'. A block costs heads·N·BLOCK floats per example for each of the few
# arrays of one block (logits, probabilities, the logits' tangent), where 'xla' keeps heads·N² for
# each of its arrays; at N ≤ BLOCK there is one block (the N² logits exist again, but only while one
# layer computes: nothing N×N is kept for the backward). 128: on the CPU the fastest or near it for
# every layer measured, and 1/4 of 512's memory (docs/attention.md §4).
BLOCK = 128


def xla_attention(q, k, v):
  """softmax(q kᵀ/√d) v with the logits materialised (docs/attention.md eq. 1). Logits in at least
  float32 (bfloat16 activations), float64 where the inputs are."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k)
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / jnp.sqrt(q.shape[-1])
  weights = nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


def blockwise_attention(q, k, v, block=None):
  """softmax(q kᵀ/√d) v by an online softmax over blocks of `block` keys (None: BLOCK), with the
  blockwise JVP of docs/attention.md eq. 4. N need not be a multiple of the block: the last block
  is padded and its padding masked."""
  return _attention_and_lse(q, k, v, min(int(block or BLOCK), k.shape[1]))[0]


def attention(q, k, v, implementation='xla'):
  """The attention `implementation` (one of ATTENTIONS) names; q, k, v: (B, N, heads, d)."""
  if implementation == 'xla':
    return xla_attention(q, k, v)
  if implementation == 'blockwise':
    return blockwise_attention(q, k, v)
  raise ValueError(f'Unknown attention {implementation!r}; known: {ATTENTIONS}.')


# --------------------------------------------------------------------------- the blockwise pieces


def _accumulation_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32)


def _blocks(x, block):
  """(B, N, H, d) → (number of blocks, B, block, H, d), zero-padded to whole blocks."""
  B, N, H, d = x.shape
  n = -(-N // block)
  x = jnp.pad(x, ((0, 0), (0, n * block - N), (0, 0), (0, 0)))
  return x.reshape(B, n, block, H, d).swapaxes(0, 1)


def _logits(q, k_j, acc):
  """S_j = q k_jᵀ/√d: (B, H, N, block) in the accumulation dtype."""
  return jnp.einsum('bqhd,bkhd->bhqk', q, k_j, preferred_element_type=acc) / math.sqrt(q.shape[-1])


def _valid(j, block, n_keys):
  """Which keys of block j exist (the last block's padding does not): (block,) booleans."""
  return j * block + jnp.arange(block) < n_keys


def _forward(q, k, v, block):
  """(O, L): the attention and the log-normaliser L = log Σ_k exp S_k (B, H, N), by one pass over
  the key blocks with a running maximum m and sum l (docs/attention.md eq. 2)."""
  acc = _accumulation_dtype(q.dtype)
  B, N, H, d = q.shape

  def step(carry, xs):
    m, l, o = carry
    j, k_j, v_j = xs
    s = jnp.where(_valid(j, block, k.shape[1]), _logits(q, k_j, acc), -jnp.inf)
    m_new = jnp.maximum(m, s.max(-1))   # finite from the first block on: key 0 is in it
    p = jnp.exp(s - m_new[..., None])
    c = jnp.exp(m - m_new)              # rescales what the earlier blocks summed
    l = c * l + p.sum(-1)
    o = c[..., None] * o + jnp.einsum('bhqk,bkhd->bhqd', p.astype(v.dtype), v_j,
                                      preferred_element_type=acc)
    return (m_new, l, o), None

  init = (jnp.full((B, H, N), -jnp.inf, acc), jnp.zeros((B, H, N), acc),
          jnp.zeros((B, H, N, v.shape[-1]), acc))
  xs = (jnp.arange(-(-k.shape[1] // block)), _blocks(k, block), _blocks(v, block))
  (m, l, o), _ = jax.lax.scan(step, init, xs)
  return (o / l[..., None]).swapaxes(1, 2).astype(v.dtype), m + jnp.log(l)


def _tangent(q, k, v, dq, dk, dv, o, lse, block):
  """(Ȯ, L̇) of docs/attention.md eq. 4: with P_j = exp(S_j − L) from the final normaliser and
  Ṡ_j = (q̇ k_jᵀ + q k̇_jᵀ)/√d, the sums a = Σ_j P_j v̇_j + (P_j ⊙ Ṡ_j) v_j and r = Σ_j rowsum(P_j ⊙ Ṡ_j)
  over key blocks; Ȯ = a − r ⊙ O and L̇ = r.

  Each block's contribution is a `jax.checkpoint`: reverse mode (the backward of a loss of the
  tangent, and fm's backward, which transposes this map) keeps only its inputs, O(N·d), and
  recomputes S_j, P_j and Ṡ_j block by block; the sums are plain additions and keep nothing."""
  acc = _accumulation_dtype(q.dtype)
  n_keys = k.shape[1]

  # prevent_cse=False: inside a scan nothing can be merged across blocks anyway (JAX's advice).
  @functools.partial(jax.checkpoint, prevent_cse=False)
  def contribution(q, dq, lse, j, k_j, v_j, dk_j, dv_j):
    p = jnp.where(_valid(j, block, n_keys), jnp.exp(_logits(q, k_j, acc) - lse[..., None]), 0)
    ds = _logits(dq, k_j, acc) + _logits(q, dk_j, acc)
    pds = p * ds
    a = (jnp.einsum('bhqk,bkhd->bhqd', p.astype(v.dtype), dv_j, preferred_element_type=acc)
         + jnp.einsum('bhqk,bkhd->bhqd', pds.astype(v.dtype), v_j, preferred_element_type=acc))
    return a, pds.sum(-1)

  def step(carry, xs):
    a, r = contribution(q, dq, lse, *xs)
    return (carry[0] + a, carry[1] + r), None

  B, N, H, _ = q.shape
  init = (jnp.zeros((B, H, N, v.shape[-1]), acc), jnp.zeros((B, H, N), acc))
  xs = (jnp.arange(-(-n_keys // block)),) + tuple(_blocks(x, block) for x in (k, v, dk, dv))
  (a, r), _ = jax.lax.scan(step, init, xs)
  do = a - r[..., None] * o.swapaxes(1, 2).astype(acc)
  return do.swapaxes(1, 2).astype(o.dtype), r


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _attention_and_lse(q, k, v, block):
  """(O, L) of `_forward`, differentiated by `_attention_and_lse_jvp`. L is an output so that the
  rule can use it and stay differentiable: a loss of the tangent differentiates L too."""
  return _forward(q, k, v, block)


@_attention_and_lse.defjvp
def _attention_and_lse_jvp(block, primals, tangents):
  # (O, L) through the function itself, so that differentiating this rule again (jax.grad of a loss
  # of the tangent) uses this rule for them, with no scan over running maxima to differentiate.
  o, lse = _attention_and_lse(*primals, block)
  return (o, lse), _tangent(*primals, *tangents, o, lse, block)
