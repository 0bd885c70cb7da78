"""Tests for MultiTaskModel: input deltas before the trunk, head size checks."""

import jax
import numpy as np
import pytest

from mtl_ser import models
from tests.models.common import HEADS, SMALL, init_shapes, rng_key


@pytest.mark.parametrize("name", ("alexnet", "vgg11"))
def test_deltas_feed_the_trunk_as_extra_input_channels(name):
    model = models.make_model(name, HEADS, deltas=2, **SMALL)
    x = jax.random.normal(rng_key(1), (2, 64, 64, 1))
    variables = model.init({"params": rng_key(0)}, x, train=False)
    conv1 = variables["params"]["trunk"]["conv1"]["kernel"]
    assert conv1.shape[2] == 3
    # The delta channels' weights matter: zeroing them changes the outputs.
    outputs, _ = model.apply(variables, x, train=False)
    zeroed = jax.tree_util.tree_map(lambda v: v, variables)
    zeroed["params"]["trunk"]["conv1"]["kernel"] = conv1.at[:, :, 1:].set(0.0)
    outputs_zeroed, _ = model.apply(zeroed, x, train=False)
    assert not np.allclose(outputs["emotion"], outputs_zeroed["emotion"])
    # With them zeroed, the model is the plain one with the same weights.
    plain = models.make_model(name, HEADS, **SMALL)
    plain_vars = jax.tree_util.tree_map(lambda v: v, zeroed)
    plain_vars["params"]["trunk"]["conv1"]["kernel"] = conv1[:, :, :1]
    outputs_plain, _ = plain.apply(plain_vars, x, train=False)
    np.testing.assert_allclose(
        outputs_plain["emotion"], outputs_zeroed["emotion"], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "head_sizes,message",
    [
        ((), "at least one"),
        ((("a", 2), ("a", 3)), "duplicate"),
        ((("a", 0),), "output size 0"),
    ],
)
def test_bad_head_sizes(head_sizes, message):
    model = models.make_model("vgg11", head_sizes, **SMALL)
    with pytest.raises(ValueError, match=message):
        init_shapes(model, (1, 64, 64, 1))
