"""A run built from its config: the model input's spec, the step's batch, the
restore target scoring builds (training/build.py)."""

import jax
import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser import weighting
from mtl_ser.data import features
from mtl_ser.training import build, sharding


def _tasks(c):
    return tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)


def test_the_restore_target_is_the_state_as_shapes_with_its_shardings(smoke_config):
    c = smoke_config
    c.train.ema_decay = 0.9  # The averages are part of the state too.
    mesh = sharding.make_mesh()
    steps = build.build_steps(c, _tasks(c), mesh)
    evaluation = build.build_eval(c, _tasks(c), mesh)
    abstract, made = evaluation.abstract_state, steps.state
    assert jax.tree.structure(abstract) == jax.tree.structure(made)
    for a, m in zip(jax.tree.leaves(abstract), jax.tree.leaves(made), strict=True):
        assert isinstance(a, jax.ShapeDtypeStruct)  # Nothing allocated.
        assert (a.shape, a.dtype) == (m.shape, m.dtype)
        assert a.sharding == m.sharding == sharding.replicated(mesh)
        assert len(m.sharding.device_set) == 4  # On every device.


def test_input_spec_follows_the_data_section(smoke_config):
    c = smoke_config
    plain = build.input_spec(c)  # No statistics: the batches carry "x" as is.
    assert plain.crop == c.data.crop_frames
    np.testing.assert_array_equal(plain.mean, np.zeros(c.features.n_mels))
    np.testing.assert_array_equal(plain.std, np.ones(c.features.n_mels))
    assert (plain.noise, plain.spec_augment, plain.log_mel) == (None, None, None)
    c.data.noise_prob, c.data.time_masks = 0.5, 2
    c.data.features_on_device = True
    mean = np.linspace(-60.0, -10.0, c.features.n_mels)  # float64, as statistics.
    spec = build.input_spec(c, (mean, 2.0 + mean / 100))
    assert spec.mean.dtype == spec.std.dtype == np.float32
    np.testing.assert_allclose(spec.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(spec.std, 2.0 + mean / 100, rtol=1e-6)
    assert spec.noise.prob == 0.5
    assert spec.noise.snr_db == tuple(float(v) for v in c.data.noise_snr_db)
    assert spec.spec_augment.time_masks == 2
    assert spec.log_mel == features.log_mel_settings(c.features)


def test_a_step_takes_as_many_batches_as_its_method_uses(smoke_config):
    c, tasks = smoke_config, _tasks(smoke_config)
    c.weighting.fixed_weights = ",".join("1" * len(tasks))  # For "fixed".
    sizes = {}
    for name in weighting.METHODS:
        c.weighting.name = name
        method = weighting.make_method(c.weighting, tasks)
        sizes[name] = build.step_batch_size(c)
        assert sizes[name] == method.batches_per_step * c.data.batch_size, name
    assert sizes["equal"] == c.data.batch_size
    assert max(sizes.values()) > c.data.batch_size  # Some take several.
