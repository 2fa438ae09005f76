"""The loss registry: each loss of docs/losses.md with what the rest of the code needs to know of it.

Every loss is `loss_fn(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None,
y=None, weighting=None) -> (loss, aux)` with `apply_fn(params, s, t, x, y) -> v_θ(s, t, x | y)`,
`teacher(t, x, y) -> b_t(x | y)`, y the batch's class labels (None for an unconditional model) and `weighting` the learned
w_φ(s, t) (docs/losses.md §9), passed only when loss.weighting = 'learned'.

A new loss is its module, its entry below (with its option block, if it has one) and its tests:
training, evaluation, validation and the configs read everything else from here.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional

from flowmap_jax.losses import alphaflow
from flowmap_jax.losses import distillation
from flowmap_jax.losses import flow_matching
from flowmap_jax.losses import imeanflow
from flowmap_jax.losses import itvm
from flowmap_jax.losses import meanflow
from flowmap_jax.losses import self_distillation
from flowmap_jax.losses import shortcut
from flowmap_jax.losses import tvm
from flowmap_jax.losses.common import Option


def _no_target_ema(config):
  del config


@dataclasses.dataclass(frozen=True)
class Loss:
  fn: Callable[..., Any]
  # Distils a frozen teacher velocity b_t(x) and cannot run without one.
  needs_teacher: bool = False
  # False for a loss that learns only the diagonal, a velocity field (fm): it is sampled and
  # evaluated by its ODE, not as a flow map.
  learns_flow_map: bool = True
  # Its block config.loss.<name>: field -> Option (default and allowed values).
  options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
  # loss config -> the rate of the target EMA θ⁻ the loss reads, or None when it reads none.
  target_ema_rate: Callable[[Any], Optional[float]] = _no_target_ema
  # Receives `null_label=` (the class index labels are dropped to) on class-conditional data: it
  # builds classifier-free guidance into its target.
  takes_null_label: bool = False
  # Receives `step=` (the train step, a traced int32 scalar): its objective follows a curriculum
  # over training (alphaflow's α).
  takes_step: bool = False
  # loss block -> whether its options put classifier-free guidance into the target (which needs
  # class-conditional image data and label dropout, checked by validate.py).
  guided: Callable[[Any], bool] = lambda loss_config: False


REGISTRY = {
    'fm': Loss(flow_matching.fm_loss, learns_flow_map=False),
    'lmd': Loss(distillation.lmd_loss, needs_teacher=True),
    'emd': Loss(distillation.emd_loss, needs_teacher=True),
    'itvm': Loss(itvm.itvm_loss, needs_teacher=True, options=itvm.OPTIONS,
                 target_ema_rate=itvm.target_ema_rate),
    'lsd': Loss(self_distillation.lsd_loss, options=self_distillation.LSD_OPTIONS,
                target_ema_rate=self_distillation.lsd_target_ema_rate),
    'esd': Loss(self_distillation.esd_loss),
    'psd': Loss(self_distillation.psd_loss, options=self_distillation.PSD_OPTIONS),
    'meanflow': Loss(meanflow.meanflow_loss, options=meanflow.OPTIONS, takes_null_label=True,
                     guided=lambda l: meanflow.guided(l.meanflow)),
    'imeanflow': Loss(imeanflow.imeanflow_loss, options=imeanflow.OPTIONS, takes_null_label=True,
                      guided=lambda l: imeanflow.guided(l.imeanflow)),
    'alphaflow': Loss(alphaflow.alphaflow_loss, options=alphaflow.OPTIONS, takes_null_label=True,
                      takes_step=True, guided=lambda l: meanflow.guided(l.alphaflow)),
    'shortcut': Loss(shortcut.shortcut_loss, options=shortcut.OPTIONS,
                     target_ema_rate=shortcut.target_ema_rate, takes_null_label=True,
                     guided=lambda l: l.shortcut.bootstrap_cfg),
    'tvm': Loss(tvm.tvm_loss, options=tvm.OPTIONS, target_ema_rate=tvm.target_ema_rate,
                takes_null_label=True, guided=lambda l: l.tvm.cfg != 1.0),
}


def spec(name: str) -> Loss:
  if name not in REGISTRY:
    raise ValueError(f'Unknown loss {name!r}; known: {sorted(REGISTRY)}.')
  return REGISTRY[name]


def get(name: str):
  """The loss function of `name`."""
  return spec(name).fn


def names():
  return sorted(REGISTRY)


def option_defaults():
  """{loss name: {field: default}} for every loss with an option block (what configs start from)."""
  return {name: {k: o.default for k, o in l.options.items()}
          for name, l in REGISTRY.items() if l.options}
