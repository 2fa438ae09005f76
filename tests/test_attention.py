"""The blockwise attention (models/attention.py, docs/attention.md) against the plain one: values,
tangents, gradients of losses of the tangent, memory, and the networks and losses that use it."""
import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import models
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax import validate
from flowmap_jax.models import attention
from flowmap_jax.models import dit

# (N, heads, d, block): N not a multiple of the block (7 in blocks of 3, 33 in blocks of 16: the
# last block padded and masked), and one block holding every key.
SHAPES = [(7, 2, 4, 3), (33, 3, 8, 16), (20, 1, 16, 512)]


def _inputs(key, shape, dtype, scale=1.0):
  """q, k, v and tangents q̇, k̇, v̇ of shape (2, N, heads, d)."""
  return [scale * jax.random.normal(k, shape, dtype) for k in jax.random.split(key, 6)]


def _everything(fn):
  """O, Ȯ, ∇ of a loss of (O, Ȯ) (what lsd/lmd differentiate) and ∇ of a loss of O (fm's)."""
  def run(q, k, v, dq, dk, dv):
    jvp = lambda q, k, v: jax.jvp(fn, (q, k, v), (dq, dk, dv))
    o, do = jvp(q, k, v)
    of_tangent = lambda *a: jnp.sum(jnp.sin(jvp(*a)[1]) * jvp(*a)[0])
    of_value = lambda *a: jnp.sum(jnp.cos(fn(*a)))
    return (o, do, jax.grad(of_tangent, argnums=(0, 1, 2))(q, k, v),
            jax.grad(of_value, argnums=(0, 1, 2))(q, k, v))
  return jax.jit(run)


@pytest.mark.parametrize('dtype,tol', [('float64', 1e-10), ('float32', 1e-5)])
def test_blockwise_equals_plain_attention_in_value_tangent_and_gradients(dtype, tol):
  with jax.enable_x64(dtype == 'float64'):
    for i, (N, H, d, block) in enumerate(SHAPES if dtype == 'float64' else SHAPES[1:2]):
      # In float64 one case with logits in the tens (the running maximum must keep exp() in range;
      # in float32 both paths lose 1e-4 of such gradients to rounding).
      big = i == 1 and dtype == 'float64'
      args = _inputs(jax.random.key(i), (2, N, H, d), jnp.dtype(dtype), 3.0 if big else 1.0)
      ours = _everything(lambda q, k, v, b=block: attention.blockwise_attention(q, k, v, b))(*args)
      plain = _everything(attention.xla_attention)(*args)
      for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        assert a.dtype == b.dtype
        # Relative to each array's scale: gradients in the tens (large logits) carry float32
        # rounding of 1e-5 of their size in both computations.
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(jnp.max(jnp.abs(b))),
                                   err_msg=f'N={N} H={H} d={d}')


def test_bfloat16_inputs_accumulate_in_float32():
  """bfloat16 q, k, v: the output is bfloat16, within bfloat16 rounding of float32 attention of the
  same inputs, and no further off than the plain path (which also takes its logits in float32)."""
  args32 = _inputs(jax.random.key(0), (2, 200, 2, 16), jnp.float32)
  args16 = [a.astype(jnp.bfloat16) for a in args32]
  exact = _everything(attention.xla_attention)(*[a.astype(jnp.float32) for a in args16])
  ours = _everything(lambda q, k, v: attention.blockwise_attention(q, k, v, 128))(*args16)
  plain = _everything(attention.xla_attention)(*args16)
  assert ours[0].dtype == ours[1].dtype == jnp.bfloat16
  for a, b, e in zip(jax.tree.leaves(ours), jax.tree.leaves(plain), jax.tree.leaves(exact)):
    err = float(jnp.max(jnp.abs(a.astype(jnp.float32) - e)))
    scale = float(jnp.max(jnp.abs(e)))
    assert err <= 2 ** -6 * scale, (err, scale)
    assert err <= 1.5 * float(jnp.max(jnp.abs(b.astype(jnp.float32) - e))) + 2 ** -9 * scale


def _temp_bytes(fn, n, heads=2, d=8):
  """XLA's temporaries for ∇ of a loss of (O, Ȯ) at n tokens (compiled, never run)."""
  q, k, v, dq, dk, dv = (jax.ShapeDtypeStruct((1, n, heads, d), jnp.float32) for _ in range(6))
  def loss(q, k, v, dq, dk, dv):
    o, do = jax.jvp(fn, (q, k, v), (dq, dk, dv))
    return jnp.sum(o * do)
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v, dq, dk, dv).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_gradient_of_a_loss_of_the_tangent_keeps_no_n_by_n_array():
  """Doubling N: the plain path's temporaries grow 4× (it keeps N×N logits, probabilities and
  their tangents for the backward), the blockwise path's 2× (blocks of 64 keys, recomputed), and
  at 2048 tokens the blockwise one needs less than half of one B·H·N² float32 array."""
  blockwise = lambda q, k, v: attention.blockwise_attention(q, k, v, 64)
  plain = [_temp_bytes(attention.xla_attention, n) for n in (1024, 2048)]
  ours = [_temp_bytes(blockwise, n) for n in (1024, 2048)]
  assert plain[1] / plain[0] > 3.5, plain
  assert ours[1] / ours[0] < 2.3, ours
  assert ours[1] < 0.5 * (1 * 2 * 2048 ** 2 * 4) and ours[1] < plain[1] / 10, (ours, plain)


def _tiny_net(name, **fields):
  m = config_io.from_json(json.dumps(dict(
      name=name, dtype='float32', num_fourier=4, max_freq=8.0, remat='none', attention='xla',
      unet=dict(channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(8,), dropout=0.0),
      dit=dict(size='T', patch_size=2, dropout=0.0, qk_norm=False))))
  for k, v in fields.items():
    (m if k in m else m[name])[k] = v
  return models.get(m, sigma=0.5, num_classes=3)


def test_the_unet_computes_the_same_function_with_either_attention(monkeypatch):
  """The U-Net's attention at 8×8 (64 tokens in blocks of 6: padded): its value and ∂_t, float64.
  (The DiT: through every loss, below.)"""
  monkeypatch.setattr(attention, 'BLOCK', 6)
  with jax.enable_x64(True):
    x = 0.5 * jax.random.normal(jax.random.key(0), (2, 8, 8, 3), jnp.float64)
    s, t, y = jnp.array([0.1, 0.3]), jnp.array([0.6, 0.9]), jnp.array([0, 2])
    params = jax.jit(_tiny_net('unet').init)(jax.random.key(1), s, t, x, y)['params']
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    params = unravel(flat + 0.05 * jax.random.normal(jax.random.key(2), flat.shape, flat.dtype))

    def value_and_dt(impl):
      net = _tiny_net('unet', attention=impl)
      f = lambda t_: net.apply({'params': params}, s, t_, x, y)
      return jax.jit(lambda t_: jax.jvp(f, (t_,), (jnp.ones_like(t_),)))(t)

    (v0, dv0), (v1, dv1) = value_and_dt('xla'), value_and_dt('blockwise')
    assert float(jnp.max(jnp.abs(dv0))) > 1e-3
    np.testing.assert_allclose(v1, v0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dv1, dv0, rtol=1e-10, atol=1e-12)


def test_qk_norm_normalises_each_heads_queries_and_keys_and_adds_nothing_when_off(monkeypatch):
  """qk_norm: one learned scale per head channel on q and on k, and attention that no longer sees
  their size (the qkv projection's q and k columns ×10 change nothing); off, the parameter tree is
  the reference DiT's (tests/test_parity.py) and the same scaling does change the output."""
  monkeypatch.setitem(dit.SIZES, 'T', (32, 1, 2))   # one block of 2 heads × 16 channels
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
  s, t, y = jnp.zeros(1), jnp.full(1, 0.5), jnp.zeros(1, jnp.int32)
  out = {}
  for qk_norm in (False, True):
    net = _tiny_net('dit', qk_norm=qk_norm)
    params = _perturbed(jax.jit(net.init)(jax.random.key(1), s, t, x, y)['params'], 2)
    block = params['DiTBlock_0']
    if qk_norm:
      assert block['q_norm']['scale'].shape == block['k_norm']['scale'].shape == (16,)
    else:
      assert not any(k.endswith('_norm') for k in block)
    qkv = block['Dense_1']   # columns (q | k | v) × heads × channels
    width = qkv['kernel'].shape[0]
    scaled = {k: v.at[..., :2 * width].multiply(10.0) for k, v in qkv.items()}
    apply = jax.jit(lambda p: net.apply({'params': p}, s, t, x, y))
    changed = {**params, 'DiTBlock_0': {**block, 'Dense_1': scaled}}
    out[qk_norm] = float(jnp.max(jnp.abs(apply(changed) - apply(params))))
  assert out[True] < 1e-4 < out[False], out


def _perturbed(params, seed):
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  return unravel(flat + 0.02 * jax.random.normal(jax.random.key(seed), flat.shape))


def _dit_experiment(loss, impl):
  c = config_io.load('configs/lsd_cifar10.py:smoke')
  c.model.name, c.model.dit.patch_size, c.model.attention = 'dit', 8, impl
  c.loss.name, c.loss.weighting, c.loss.diag_fraction = loss, 'none', 0.0
  c.data.batch_size = 2
  # One device: the test process simulates 8, whose partitioning would only add compile time.
  one = jax.make_mesh((1, 1), ('data', 'fsdp'), devices=jax.devices()[:1],
                      axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return state_lib.Experiment(c, mesh=one)


def test_every_loss_computes_the_same_step_with_either_attention(monkeypatch):
  """A one-block DiT on 16 tokens in blocks of 6 (padded): each loss's value and gradient (the train step's; its update is the optimiser's) are those of the plain attention,
  the distillation losses against a teacher with other weights. All off-diagonal (diag_fraction 0:
  the diagonal is fm's, and one network call per loss compiles in half the time)."""
  monkeypatch.setattr(attention, 'BLOCK', 6)
  monkeypatch.setitem(dit.SIZES, 'T', (32, 1, 2))
  exp = _dit_experiment('fm', 'xla')
  params = _perturbed(jax.jit(exp.init_params)(jax.random.key(0)), 1)
  teacher = _perturbed(params, 2)
  images = np.random.RandomState(0).randint(0, 256, (2,) + exp.data_shape).astype(np.uint8)
  batch = {'image': images, 'label': np.zeros(2, np.int32)}
  for name in losses.names():
    exps = {impl: _dit_experiment(name, impl) for impl in models.ATTENTIONS}

    def both(params, teacher, exps=exps):
      out = {}
      for impl, e in exps.items():
        state = e.state_from_params(params, jax.random.key(3))
        loss_of = step_lib.loss_of_params(e, state, batch, teacher, teacher_lib.velocity_fn(e))
        (loss, _), grad = jax.value_and_grad(loss_of, has_aux=True)(params)
        out[impl] = loss, jax.flatten_util.ravel_pytree(grad)[0]
      return out

    out = jax.jit(both)(params, teacher if exps['xla'].loss.needs_teacher else None)
    (loss0, grad0), (loss1, grad1) = out['xla'], out['blockwise']
    scale = float(jnp.max(jnp.abs(grad0)))
    assert scale > 1e-4, name
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(grad1, grad0, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def test_attention_and_qk_norm_are_checked_and_old_runs_still_read():
  c = config_io.load('configs/lsd_cifar10.py:smoke')
  c.model.attention = 'flash'
  assert "model.attention='flash' is not known; use one of ['blockwise', 'xla']." in (
      validate.problems_of(c, num_devices=1, num_processes=1))
  c.model.attention = 'blockwise'
  with c.ignore_type():
    c.model.dit.qk_norm = 'yes'
  assert "model.dit.qk_norm='yes' must be True or False." in validate.problems_of(
      c, num_devices=1, num_processes=1)
  for path in ('configs/fm_mnist.py', 'configs/itvm_cifar10.py', 'configs/fm_celeba64.py'):
    c = config_io.load(path)
    assert c.model.attention in models.ATTENTIONS and c.model.dit.qk_norm is False, path
  # A config.json saved before the fields existed: no qk_norm (read as False), no attention
  # (models.get computes 'xla'); a resumed run may choose its attention, not its network.
  saved = config_io.to_dict(config_io.load('configs/lsd_cifar10.py:smoke'))
  del saved['model']['attention'], saved['model']['dit']['qk_norm']
  old = config_io.from_json(json.dumps(saved))
  assert old.model.dit.qk_norm is False and 'attention' not in old.model
  assert isinstance(models.get(old.model, sigma=0.5), models.SongUNet)
  assert any(k.startswith('model.attention') for k in validate.MUTABLE_PREFIXES)
