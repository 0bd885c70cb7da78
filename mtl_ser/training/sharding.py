"""The device mesh and the host -> device boundary.

One code path for 1 CPU, N GPUs or many hosts: a 1-D ("data",) mesh over all
devices of all processes; batches are split along it, the state is replicated.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh named "data" over `devices` (default: all, of all processes)."""
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh(
        (len(devices),),
        ("data",),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, field: str):
    """Fails early, naming the field, if the batch cannot be split evenly."""
    if batch_size % jax.device_count():
        raise ValueError(
            f"{field}={batch_size}: not divisible by the {jax.device_count()} devices"
        )


def from_process_local(batch, mesh):
    """This process's share of a global batch -> global jax.Arrays on the mesh.

    With one process its share is the whole batch, and one device_put of the
    tree moves it (about half the host time per step of one transfer a leaf).
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
        batch,
    )


def from_global(batch, mesh):
    """A full global batch present on every process -> global jax.Arrays.

    Each process only transfers the rows its own devices hold.
    """
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, batch)


def replicate(x, mesh):
    """A host array present on every process -> a global jax.Array replicated
    on every device of the mesh (each process transfers to its own devices)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated(mesh), lambda idx: x[idx])
