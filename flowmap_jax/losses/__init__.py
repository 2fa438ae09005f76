"""The loss registry: `losses.get(name)` for every loss of ALGORITHMS.md §3.

Every loss is `loss_fn(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
y=None) -> (loss, aux)` with `apply_fn(params, s, t, x, y) -> v_θ(s, t, x | y)`, `teacher(t, x, y) ->
b_t(x | y)` and y the batch's class labels (None for an unconditional model).
"""
from flowmap_jax.losses.distillation import emd_loss, lmd_loss
from flowmap_jax.losses.flow_matching import fm_loss
from flowmap_jax.losses.itvm import itvm_loss
from flowmap_jax.losses.meanflow import meanflow_loss
from flowmap_jax.losses.self_distillation import esd_loss, lsd_loss, psd_loss

LOSSES = {
    'fm': fm_loss,
    'lmd': lmd_loss,
    'emd': emd_loss,
    'itvm': itvm_loss,
    'lsd': lsd_loss,
    'esd': esd_loss,
    'psd': psd_loss,
    'meanflow': meanflow_loss,
}
# Losses that distil a frozen teacher velocity b_t(x) and cannot run without one.
NEEDS_TEACHER = ('lmd', 'emd', 'itvm')
# Losses that read the target EMA θ⁻ (itvm always; lsd with lsd.teacher=ema).
USES_TARGET_EMA = ('itvm', 'lsd')


def get(name: str):
  if name not in LOSSES:
    raise ValueError(f'Unknown loss {name!r}; known: {sorted(LOSSES)}.')
  return LOSSES[name]


def names():
  return sorted(LOSSES)
