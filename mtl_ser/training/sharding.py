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
    """This process's share of a global batch -> global jax.Arrays on the mesh."""
    sharding = batch_sharding(mesh)
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
