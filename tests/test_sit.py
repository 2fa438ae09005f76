"""SiT as a teacher (docs/sit.md): our DiT with SiT's time embedding on SiT's converted weights
against willisma/SiT's own code, on the fixture tools/parity/sit.py wrote with torch (this test
needs none): the velocity, classifier-free guidance, the ODE sampler; the conversion's checks; a
converted teacher workdir opened as a teacher and a student started from it."""
import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import flowmap_jax
from flowmap_jax import config_io
from flowmap_jax import sampling
from flowmap_jax import sit
from flowmap_jax import state as state_lib
from flowmap_jax import teacher as teacher_lib
from flowmap_jax.models import sit as sit_weights

HERE = os.path.dirname(__file__)
FIXTURE = np.load(os.path.join(HERE, 'fixtures', 'sit_parity.npz'))


def _tool():
  path = os.path.join(HERE, '..', 'tools', 'parity', 'sit.py')
  spec = importlib.util.spec_from_file_location('parity_sit', path)
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)
  return tool


TOOL = _tool()


def _sit_shapes():
  """SiT's own state-dict keys and shapes, as its model.state_dict() had them."""
  return {k: tuple(int(n) for n in s.split(','))
          for k, s in zip(FIXTURE['keys'], FIXTURE['shapes'])}


def state_dict():
  """The tiny SiT's weights: drawn from the seed tools/parity/sit.py loaded into SiT's model."""
  return TOOL.random_state_dict(_sit_shapes())


def tiny_config(path='configs/fm_imagenet256.py:smoke'):
  """A latent config of the tiny SiT's data: 8×8×4 latents, 3 classes."""
  c = config_io.load(path)
  c.data.images.name, c.data.images.num_classes = 'npz', 3
  return c


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('sit') / 'teacher'
  sit.write_teacher(state_dict(), out, tiny_config(), provenance={'checkpoint': 'tiny'})
  return str(out)


@pytest.fixture(scope='module')
def model(teacher_dir):
  return flowmap_jax.load(teacher_dir)


def test_converted_sit_equals_sits_forward():
  """SiT's `forward` (learn_sigma=True: its velocity half) at t from 0 to 1 and every label, the
  null one included; our conversion expects exactly SiT's own state-dict keys and shapes."""
  converted, spec = sit_weights.convert(state_dict())
  expected = sit_weights.expected_keys(sit_weights.parameter_shapes(spec), spec)
  assert {k: v[2] for k, v in expected.items()} == _sit_shapes()
  assert (spec.size, spec.heads, spec.num_classes, spec.learn_sigma) == ('T', 2, 3, True)
  net, params = TOOL.ours(state_dict())
  f = FIXTURE
  apply = jax.jit(lambda s, t: net.apply({'params': params}, s, t, f['x'], f['y']))
  out = apply(f['t'], f['t'])
  # The fixture carries signal, in time too: one x at t = 0.05 and 0.9 with the same label.
  assert np.max(np.abs(f['expected'])) > 1
  assert np.max(np.abs(f['expected'][1] - f['expected'][4])) > 0.3
  np.testing.assert_allclose(out, f['expected'], atol=1e-5, rtol=0)
  # The second time's embedding adds zero: v(s, t, x) = v(s, s, x) for every t.
  later = apply(f['t'], jnp.minimum(f['t'] + 0.4, 1.0))
  np.testing.assert_array_equal(later, out)


def test_learn_sigma_false_converts_to_the_same_network():
  """A SiT trained with learn_sigma=False has only the velocity rows; they are what is kept of the
  released layout's 2·p²·C (ordered row, column, channel: the first C channels of each pixel)."""
  full = state_dict()
  half = dict(full)
  for key in ('final_layer.linear.weight', 'final_layer.linear.bias'):
    w = full[key]
    half[key] = w.reshape((2, 2, 8) + w.shape[1:])[:, :, :4].reshape((16,) + w.shape[1:])
  (a, spec_a), (b, spec_b) = sit_weights.convert(full), sit_weights.convert(half)
  assert spec_a.learn_sigma and not spec_b.learn_sigma
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_time_embedding_is_validated():
  from flowmap_jax import validate  # pylint: disable=g-import-not-at-top
  c = config_io.load('configs/itvm_imagenet256.py')
  c.model.dit.time_embedding = 'SiT'
  assert ("model.dit.time_embedding='SiT' is not known; use one of ['fourier', 'sit']."
          in validate.problems_of(c, num_devices=1, num_processes=1))


def test_conversion_errors_are_one_line():
  good = state_dict()
  cases = [({k: v for k, v in good.items() if k != 'blocks.1.attn.qkv.weight'},
            'missing keys blocks.1.attn.qkv.weight'),
           ({**good, 'blocks.0.mlp.fc1.weight': np.zeros((255, 64), np.float32)},
            'wrong shapes: blocks.0.mlp.fc1.weight (255, 64) (expected (256, 64))'),
           ({**good, 'blocks.0.attn.q_norm.weight': np.zeros(32, np.float32)},
            'unexpected keys blocks.0.attn.q_norm.weight'),
           ({**good, 'pos_embed': good['pos_embed'] + 0.1}, 'pos_embed differs'),
           ({k: v for k, v in good.items() if k != 'pos_embed'}, 'missing key pos_embed'),
           ({**good, 'final_layer.linear.weight': np.zeros((24, 64), np.float32)},
            'final_layer.linear.weight has 24 rows')]
  for weights, message in cases:
    with pytest.raises(sit_weights.SiTWeightsError, match=re.escape(message)) as e:
      sit_weights.convert(weights, source='sit.pt')
    assert '\n' not in str(e.value) and str(e.value).startswith('sit.pt')


def test_conversion_command_exits_2_with_one_line(tmp_path, capsys):
  """python -m flowmap_jax.sit: a missing key, a config of other data, an existing run."""
  good = state_dict()
  broken = tmp_path / 'broken.npz'
  np.savez(broken, **{k: v for k, v in good.items() if k != 't_embedder.mlp.2.bias'})
  intact = tmp_path / 'intact.npz'
  np.savez(intact, **good)
  for npz, config, message in [
      (broken, [], 'missing keys t_embedder.mlp.2.bias'),
      (intact, [], 'no config for 8×8 latents'),
      (intact, ['--config', 'configs/fm_imagenet256.py:smoke'],
       'embeds 3 classes (+ the null label) but the config'),
      (tmp_path / 'absent.npz', [], 'no such file')]:
    assert sit.main(['--npz', str(npz), '--out', str(tmp_path / 'out'), *config]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and message in err, err


def test_converted_teacher_opens_and_is_sits_velocity(model):
  """flowmap_jax.load of the workdir: the velocity v_θ(t, t, x) is SiT's forward, its guidance
  at 1.5 SiT's all-channel one, and sit.guided_apply_fn SiT's own forward_with_cfg (3 channels)."""
  f = FIXTURE
  assert model.config.model.dit.time_embedding == 'sit' and model.config.model.dtype == 'float32'
  velocity = jax.jit(model.velocity, static_argnames='guidance')
  np.testing.assert_allclose(velocity(f['t'], f['x'], f['y']), f['expected'], atol=1e-5, rtol=0)
  np.testing.assert_allclose(velocity(f['t'], f['x'], f['y'], guidance=1.5),
                             f['expected_cfg_all_channels'], atol=1e-5, rtol=0)
  sits = jax.jit(sit.guided_apply_fn(model.exp, 1.5))(model.params, f['t'], f['t'], f['x'],
                                                      f['y'])
  np.testing.assert_allclose(sits, f['expected_cfg'], atol=1e-5, rtol=0)
  # The two guidances agree on SiT's 3 guided channels and differ on the 4th.
  assert np.max(np.abs(f['expected_cfg'][..., 3] - f['expected_cfg_all_channels'][..., 3])) > 0.1


def test_our_ode_sampler_matches_sits(model):
  """Our adaptive ODE of the converted teacher from SiT's noise, against SiT's Sampler.sample_ode
  (dopri5 at its atol 1e-6, rtol 1e-3) and the exact end point (float64 at 1e-10): SiT's sampler
  is 1.8e-3 from it (end points up to 7.6), ours at 1e-6 reaches it, so both solve the same ODE
  from noise at t = 0 to data at t = 1 (at SiT's tolerances ours is 3.2e-3 from SiT's:
  tools/parity/sit.py)."""
  velocity = teacher_lib.velocity_fn(model.exp)(model.params)
  noise, y = jnp.asarray(FIXTURE['noise']), jnp.asarray(FIXTURE['ode_y'])
  theirs, exact = FIXTURE['ode_sit'], FIXTURE['ode_exact']
  assert 1e-4 < np.max(np.abs(theirs - exact)) < 5e-3
  ours, _ = jax.jit(lambda x, y_: sampling.adaptive(velocity, x, 'dopri5', rtol=1e-6, atol=1e-6,
                                                    y=y_))(noise, y)
  np.testing.assert_allclose(ours, exact, atol=1e-4, rtol=0)
  np.testing.assert_allclose(ours, theirs, atol=5e-3, rtol=0)


def test_student_starts_as_the_converted_teacher(teacher_dir):
  """ITVM on the tiny teacher with train.init_from_teacher: the student's v(s, t, x) is the
  teacher's velocity at s for every t, its embedder of t − s zero in its last layer."""
  c = tiny_config('configs/itvm_imagenet256.py:smoke')
  c.model.dit.time_embedding = 'sit'
  c.teacher.workdir = teacher_dir
  teacher = teacher_lib.load(c, str(os.path.dirname(teacher_dir)), require_existing=True)
  exp = state_lib.Experiment(c)
  teacher_lib.check_init_shapes(exp, teacher)
  student = jax.device_get(exp.init_state(teacher.params).params)
  second = traverse_util.flatten_dict(student['time_embedding']['embed_t_minus_s'])
  assert not any(np.any(v) for k, v in second.items() if k[0] == 'Dense_1')
  assert all(np.any(v) for k, v in second.items() if k == ('Dense_0', 'kernel'))
  f = FIXTURE
  s, t = f['t'], np.minimum(f['t'] + 0.5, 1.0)
  v_student = jax.jit(exp.apply_fn)(student, s, t, f['x'], f['y'])
  np.testing.assert_allclose(v_student, f['expected'], atol=1e-5, rtol=0)
  # A student with our Fourier embedding cannot start from it, and is told so.
  c.model.dit.time_embedding = 'fourier'
  with pytest.raises(Exception, match='time_embedding fourier'):
    teacher_lib.check_init_shapes(state_lib.Experiment(c), teacher)
