"""The registry is all the rest of the code knows of a loss: a new loss is its function, its entry
(with its option block) and its tests; training, evaluation, validation and configs follow."""
import json

import jax.numpy as jnp
import pytest

from flowmap_jax import config_io
from flowmap_jax import losses
from flowmap_jax import state as state_lib
from flowmap_jax import train
from flowmap_jax import validate
from flowmap_jax.losses import common
from flowmap_jax.losses import self_distillation


def scaled_lsd(apply_fn, params, x0, x1, rng, *, config, ema_params=None, teacher=None, y=None):
  """A loss the package does not have: LSD times loss.scaled_lsd.scale, its target from the EMA."""
  inner = config.copy_and_resolve_references()
  inner.lsd.teacher, inner.lsd.ema_rate = 'ema', config.scaled_lsd.ema_rate
  loss, aux = losses.get('lsd')(apply_fn, params, x0, x1, rng, config=inner,
                                ema_params=ema_params, teacher=teacher, y=y)
  return config.scaled_lsd.scale * loss, aux


@pytest.fixture
def new_loss(monkeypatch):
  entry = losses.Loss(scaled_lsd, options={
      'scale': common.Option(2.0, lo=0.0, lo_open=True),
      'ema_rate': common.Option(0.9, lo=0.0, hi=1.0, hi_open=True)},
                      target_ema_rate=lambda c: c.scaled_lsd.ema_rate)
  monkeypatch.setitem(losses.REGISTRY, 'scaled_lsd', entry)
  return entry


def test_a_new_loss_trains_evaluates_and_validates_from_its_entry(new_loss, tmp_path):
  config = config_io.load('configs/lsd_checkerboard.py:smoke')  # its block comes from the entry
  assert dict(config.loss.scaled_lsd) == {'scale': 2.0, 'ema_rate': 0.9}
  config.loss.name = 'scaled_lsd'
  assert validate.problems_of(config) == []
  exp = state_lib.Experiment(config)
  assert exp.target_ema_rate == 0.9   # the train state keeps a target EMA for it
  results = train.train_and_evaluate(config, str(tmp_path))
  assert set(results['flow_map']) == {'1', '2'}   # evaluated as a flow map, no teacher compared
  assert 'teacher_ode' not in json.loads((tmp_path / 'eval.json').read_text())
  config.loss.scaled_lsd.scale = 0.0
  assert validate.problems_of(config) == ['loss.scaled_lsd.scale=0.0 must be in (0.0, inf].']


def test_entries_say_what_the_code_needs():
  assert [n for n in losses.names() if losses.spec(n).needs_teacher] == ['emd', 'itvm', 'lmd']
  assert [n for n in losses.names() if not losses.spec(n).learns_flow_map] == ['fm']
  c = config_io.load('configs/lsd_checkerboard.py').loss
  assert losses.spec('lsd').target_ema_rate(c) is None      # lsd.teacher=online
  c.lsd.teacher, c.lsd.ema_rate = 'ema', 0.95
  assert losses.spec('lsd').target_ema_rate(c) == 0.95      # its own rate, not itvm's
  assert losses.spec('itvm').target_ema_rate(c) == c.itvm.ema_rate
  assert losses.spec('psd').target_ema_rate(c) is None
  assert losses.spec('psd').options is self_distillation.PSD_OPTIONS
  assert [n for n in losses.names() if losses.spec(n).target_ema_rate(c) is not None] == [
      'itvm', 'lsd', 'shortcut', 'tvm']
  assert [n for n in losses.names() if losses.spec(n).takes_step] == ['alphaflow']


# Each loss's options that put classifier-free guidance into its target.
GUIDED = {'meanflow': {'guidance_kappa': 0.5}, 'imeanflow': {'guidance_omega': 2.0},
          'alphaflow': {'guidance_kappa': 0.5}, 'shortcut': {'bootstrap_cfg': True},
          'tvm': {'cfg': 2.0}}


@pytest.mark.parametrize('name', sorted(GUIDED))
def test_guidance_in_the_target_needs_labels_and_label_dropout(name):
  assert [n for n in losses.names() if losses.spec(n).guided(
      config_io.load('configs/lsd_checkerboard.py').loss)] == []   # no loss guides by default
  config = config_io.load('configs/lsd_checkerboard.py:smoke')
  config.loss.name = name
  config.loss[name].update(GUIDED[name])
  assert validate.problems_of(config) == [
      f"loss.{name}'s guidance options guide the target with the class labels: they need "
      'class-conditional image data (data.class_conditional=True).']
  config = config_io.load('configs/lsd_cifar10.py:smoke')
  config.loss.name, config.data.class_conditional, config.loss.label_dropout = name, True, 0.0
  config.loss[name].update(GUIDED[name])
  assert f'loss.{name} guidance needs loss.label_dropout > 0' in ' '.join(
      validate.problems_of(config))
  config.loss.label_dropout = 0.1
  assert not [q for q in validate.problems_of(config) if 'guid' in q]


def test_validation_reads_each_option_block_from_the_registry():
  config = config_io.load('configs/itvm_checkerboard.py:smoke')
  config.loss.itvm.u, config.loss.lsd.teacher, config.loss.psd.gamma = 'middle', 'x', 'y'
  problems = validate.problems_of(config)
  assert "loss.itvm.u='middle' is not known; use one of ['s_plus_tau', 't_minus_tau', 'uniform']." \
      in problems
  assert any(p.startswith("loss.lsd.teacher='x'") for p in problems)
  assert any(p.startswith("loss.psd.gamma='y'") for p in problems)


def test_lsd_with_ema_target_keeps_and_updates_its_own_ema(tmp_path):
  config = config_io.load('configs/lsd_checkerboard.py:smoke')
  config.loss.lsd.teacher, config.loss.lsd.ema_rate = 'ema', 0.5
  exp = state_lib.Experiment(config)
  state = exp.init_state()
  from flowmap_jax import step as step_lib  # pylint: disable=g-import-not-at-top
  new, _ = step_lib.jit_train_step(exp)(state, {}, None)
  p, e = new.params['Dense_0']['kernel'], new.target_ema['Dense_0']['kernel']
  p0 = exp.init_state().params['Dense_0']['kernel']
  assert jnp.allclose(e, 0.5 * p0 + 0.5 * p, atol=1e-6)
