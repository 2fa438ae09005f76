"""The same train_step on 1 device and on 8 (fake CPU) devices in every mesh layout."""
import jax
import numpy as np
import pytest

from flowmap_jax import parallel
from flowmap_jax import state as state_lib
from flowmap_jax import step as step_lib
from flowmap_jax import teacher as teacher_lib
from test_pipeline import smoke

STEPS = 6


def _run(name, mesh_shape):
  config = smoke(name, **{'mesh.fsdp_min_size': 256, 'model.mlp.width': 64})
  devices = jax.devices()[:int(np.prod(mesh_shape))]
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(mesh_shape), ('data', 'fsdp'))
  exp = state_lib.Experiment(config, mesh=mesh)
  state = exp.init_state()
  teacher = None
  if name == 'itvm':
    teacher = jax.device_put(exp.init_params(jax.random.key(7)),
                             parallel.tree_shardings(mesh, exp.init_params(jax.random.key(7)), 256))
  step_fn = step_lib.jit_train_step(exp, teacher_lib.velocity_fn(exp))
  losses = []
  for _ in range(STEPS):
    state, metrics = step_fn(state, {}, teacher)
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params), state


@pytest.mark.parametrize('name', ['itvm', 'lsd'])
def test_meshes_match_one_device(name):
  assert jax.device_count() == 8, 'conftest sets 8 fake CPU devices'
  ref_losses, ref_params, _ = _run(name, (1, 1))
  for shape in [(8, 1), (4, 2), (1, 8)]:
    losses, params, state = _run(name, shape)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, err_msg=str(shape))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(shape))
    if shape[1] > 1:  # FSDP really shards: the 64×64 kernels are split over `fsdp`.
      specs = {str(l.sharding.spec) for l in jax.tree.leaves(state.params)}
      assert any('fsdp' in s for s in specs), specs


def test_fsdp_rule():
  assert parallel.fsdp_spec((512, 256), 4, 1000) == jax.sharding.PartitionSpec('fsdp', None)
  assert parallel.fsdp_spec((6, 256), 4, 1000) == jax.sharding.PartitionSpec(None, 'fsdp')
  assert parallel.fsdp_spec((5, 7), 2, 10) == jax.sharding.PartitionSpec()  # nothing divides
  assert parallel.fsdp_spec((512,), 4, 1000) == jax.sharding.PartitionSpec()  # small
  assert parallel.fsdp_spec((4096,), 1, 10) == jax.sharding.PartitionSpec()  # no fsdp axis
