"""The mesh and the host -> device boundary on the 4 test devices
(training/sharding.py)."""

import jax
import numpy as np
import pytest

from mtl_ser.training import sharding


def test_the_mesh_is_one_data_axis_over_every_device():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count() == 4
    two = sharding.make_mesh(jax.devices()[:2])
    assert two.size == 2


def test_a_batch_is_split_along_its_first_axis_and_nothing_else():
    mesh = sharding.make_mesh()
    host = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3), "y": np.arange(8)}
    batch = sharding.from_process_local(host, mesh)
    for name, array in batch.items():
        np.testing.assert_array_equal(np.asarray(array), host[name])
        shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start)
        assert [s.data.shape[0] for s in shards] == [2, 2, 2, 2]
        rows = np.concatenate([np.asarray(s.data) for s in shards])
        np.testing.assert_array_equal(rows, host[name])  # In order, each once.
    same = sharding.from_global(host, mesh)
    for name in host:
        assert same[name].sharding == batch[name].sharding
        np.testing.assert_array_equal(np.asarray(same[name]), host[name])


def test_a_replicated_array_is_whole_on_every_device():
    mesh = sharding.make_mesh()
    x = sharding.replicate(np.arange(5.0), mesh)
    assert x.sharding == sharding.replicated(mesh)
    assert len(x.addressable_shards) == 4
    for shard in x.addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), np.arange(5.0))


def test_a_batch_the_devices_cannot_split_is_refused_naming_the_field():
    sharding.check_batch_size(8, "data.batch_size")
    with pytest.raises(ValueError, match=r"^data.batch_size=6: not divisible by"):
        sharding.check_batch_size(6, "data.batch_size")
