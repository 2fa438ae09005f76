"""flowmap_jax.load (flowmap_jax/api.py): a trained run from Python samples what its evaluation scored,
its jumps and velocity are the network's, a teacher's jumps solve its ODE, and a checkpoint written
on 8 devices restores on 1."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowmap_jax
from flowmap_jax import evaluate
from flowmap_jax import flow_map
import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flow_map_samples_are_the_ones_its_evaluation_scored(student_dir):
  """model.sample from the evaluation's noise reproduces eval.json's 1- and 2-step KL exactly."""
  model = flowmap_jax.load(student_dir)
  saved = json.loads(open(os.path.join(student_dir, 'eval.json')).read())
  assert model.learns_flow_map and model.step == saved['step']
  data, _, k_noise = evaluate.draws(model.config)
  e = model.config.eval
  for n in e.steps:
    # evaluate.flow_map_samples draws batch i from fold_in(key, i); the smoke eval is one batch.
    x = model.sample(jax.random.fold_in(k_noise, 0), int(e.num_samples), steps=n)
    assert x.shape == (e.num_samples, 2)
    got = evaluate.scores(data, np.asarray(x), e.energy_samples)
    assert got == pytest.approx(saved['flow_map'][str(n)], rel=1e-6)


def test_jump_and_velocity_are_the_networks(student_dir):
  model = flowmap_jax.load(student_dir)
  x = jax.random.normal(jax.random.key(0), (16, 2))
  s, t = jnp.linspace(0.0, 0.5, 16), jnp.linspace(0.3, 1.0, 16)
  want = flow_map.X(model.exp.apply_fn, model.params, s, t, x)
  np.testing.assert_allclose(model.jump(s, t, x), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(model.jump(0.4, 0.4, x), x)   # X(s, s, x) = x
  v = model.exp.apply_fn(model.params, 0.3 * jnp.ones(16), 0.3 * jnp.ones(16), x)
  np.testing.assert_allclose(model.velocity(0.3, x), v, rtol=1e-6, atol=1e-6)
  # Batched sampling: batch i from fold_in(rng, i), so the first batch is sample(fold_in(rng, 0)).
  a = model.sample(jax.random.key(1), 50, steps=2, batch_size=20)
  b = model.sample(jax.random.fold_in(jax.random.key(1), 0), 20, steps=2)
  assert a.shape == (50, 2)
  np.testing.assert_allclose(a[:20], b, rtol=1e-6, atol=1e-6)


def test_a_teachers_jumps_solve_its_ode(teacher_dir):
  """fm learns a velocity: its jump is the ODE's flow, X(0, 1) = X(0.5, 1) ∘ X(0, 0.5) up to the
  solver tolerance; sample(steps=k) is its Euler, steps=None the adaptive ODE of evaluation."""
  model = flowmap_jax.load(teacher_dir)
  assert not model.learns_flow_map
  x0 = evaluate.noise_and_labels(model.exp, jax.random.key(2), 64)[0]
  tol = dict(rtol=1e-6, atol=1e-6)
  direct = model.jump(0.0, 1.0, x0, **tol)
  composed = model.jump(0.5, 1.0, model.jump(0.0, 0.5, x0, **tol), **tol)
  np.testing.assert_allclose(direct, composed, atol=1e-4)
  s = jnp.linspace(0.0, 0.9, 64)   # per-example start times in one solve
  one = model.jump(s[7], 1.0, x0[7:8], **tol)
  np.testing.assert_allclose(model.jump(s, 1.0, x0, **tol)[7:8], one, atol=1e-4)
  euler = model.sample(jax.random.key(3), 100, steps=1)
  x0 = evaluate.noise_and_labels(model.exp, jax.random.key(3), 100)[0]
  v = model.velocity(0.0, x0)
  np.testing.assert_allclose(euler, x0 + v, rtol=1e-5, atol=1e-5)
  ode = model.sample(jax.random.key(3), 100)   # both at eval.ode_rtol = eval.ode_atol = 1e-3
  np.testing.assert_allclose(ode, model.jump(0.0, 1.0, x0), atol=2e-3)


def test_bad_calls_say_what_is_wrong(student_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match='no config.json'):
    flowmap_jax.load(tmp_path)
  with pytest.raises(ValueError, match='evaluation EMAs'):
    flowmap_jax.load(student_dir, ema=0.5)
  model = flowmap_jax.load(student_dir)
  with pytest.raises(ValueError, match='class-conditional'):
    model.sample(jax.random.key(0), 4, guidance=2.0)
  with pytest.raises(ValueError, match='not class-conditional'):
    model.sample(jax.random.key(0), 4, labels=1)
  with pytest.raises(ValueError, match='steps=0'):
    model.sample(jax.random.key(0), 4, steps=0)


def test_a_checkpoint_written_on_8_devices_loads_on_1(student_dir, tmp_path):
  model = flowmap_jax.load(student_dir)
  want = model.sample(jax.random.key(5), 256, steps=2)
  assert jax.device_count() == 8   # the run was trained on this process's 8 simulated devices
  code = ('import sys, jax, numpy as np, flowmap_jax\n'
          'assert jax.device_count() == 1\n'
          'm = flowmap_jax.load(sys.argv[1])\n'
          'np.save(sys.argv[2], np.asarray(m.sample(jax.random.key(5), 256, steps=2)))\n')
  env = dict(os.environ, XLA_FLAGS=xla_flags.FAST)
  out = tmp_path / 'x.npy'
  r = subprocess.run([sys.executable, '-c', code, student_dir, str(out)], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-5)
