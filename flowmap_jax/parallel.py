"""Device mesh and shardings: one `Mesh` with a `data` and an `fsdp` axis, from one CPU to a pod.

The batch is sharded over both axes; parameters are replicated (small 2-D models). jit with these
shardings replaces pmap: the same train_step runs on 1 device, 8 devices or many hosts.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')


def mesh_shape(mesh_config, num_devices):
  """(data, fsdp) sizes from the config, where -1 means 'every device the other axis leaves'."""
  data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
  if data == -1 and fsdp == -1:
    raise ValueError('mesh: at most one of mesh.data and mesh.fsdp may be -1.')
  if data == -1:
    data = num_devices // fsdp
  if fsdp == -1:
    fsdp = num_devices // data
  if data * fsdp != num_devices:
    raise ValueError(f'mesh: data={data} × fsdp={fsdp} must equal the {num_devices} devices.')
  return data, fsdp


def make_mesh(mesh_config, devices=None):
  devices = jax.devices() if devices is None else devices
  data, fsdp = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(data, fsdp), ('data', 'fsdp'))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))
