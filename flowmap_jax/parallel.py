"""Device mesh and shardings: one `Mesh` with a `data` and an `fsdp` axis, from one CPU to a pod.

The batch is split over both axes. Parameters (and everything shaped like them: optimiser moments,
EMAs) are replicated when small and FSDP-sharded when large: the largest dimension divisible by the
`fsdp` size is split over `fsdp`. jit with these shardings replaces pmap: the same train_step runs on
1 device, 8 devices or many hosts, and XLA inserts the collectives.
"""
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

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


def make_mesh(mesh_config):
  """The global mesh over every device of every process. `jax.make_mesh` orders the devices by
  the physical topology (TPU slices: neighbouring chips on the fast axes)."""
  data, fsdp = mesh_shape(mesh_config, jax.device_count())
  # Auto axes: jit with explicit in/out shardings and XLA's propagation in between (the default of
  # jax.make_mesh is Explicit axes, sharding in types, which this code does not use).
  return jax.make_mesh((data, fsdp), ('data', 'fsdp'), axis_types=(AxisType.Auto,) * 2)


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharding(mesh):
  """Leading (batch) axis split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape, fsdp_size, min_size):
  """PartitionSpec of one array: replicated below `min_size` elements (or when no dimension divides
  by the fsdp size), else its largest fsdp-divisible dimension split over `fsdp`."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  dims = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp_size == 0]
  if not dims:
    return P()
  spec = [None] * len(shape)
  spec[dims[0]] = 'fsdp'
  return P(*spec)


def tree_shardings(mesh, tree, min_size):
  """NamedShardings for every leaf of a tree of arrays or ShapeDtypeStructs, by `fsdp_spec`."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, fsdp, min_size)), tree)


def global_batch(local, mesh):
  """A global array from each process's slice of the batch (multi-host input feeding)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
