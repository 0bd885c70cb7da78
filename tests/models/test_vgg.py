"""Tests for the VGG trunks: BatchNorm params, pool size, depth."""

import jax.numpy as jnp
import pytest

from mtl_ser import models
from mtl_ser.models import layers
from tests.models.common import (
    HEADS,
    SMALL,
    TOTAL_COUNTS,
    VGG_CONVS,
    init_shapes,
    param_count,
    rng_key,
)


def test_param_counts_with_batch_norm():
    # BatchNorm adds a scale and a bias per conv channel (stats are not params).
    model = models.make_model("vgg11", (("imagenet", 1000),), batch_norm=True)
    variables = init_shapes(model, (1, 224, 224, 3))
    channels = sum(VGG_CONVS[11])
    assert param_count(variables["params"]) == TOTAL_COUNTS["vgg11"] + 2 * channels
    assert param_count(variables["batch_stats"]) == 2 * channels


def test_pool_size_time_by_mel_sets_fc1_inputs():
    default = models.make_model("vgg11", HEADS, **SMALL)
    by_mel = models.make_model("vgg11", HEADS, pool_size=(1, 2), **SMALL)
    x = jnp.zeros((1, 64, 64, 1))
    channels = layers.scaled(512, SMALL["width"])
    for model, bins in ((default, 7 * 7), (by_mel, 2)):
        params = model.init({"params": rng_key(0)}, x, train=False)["params"]
        fc1 = params["trunk"]["classifier"]["fc1"]["kernel"]
        assert fc1.shape[0] == bins * channels


def test_unknown_vgg_depth():
    with pytest.raises(ValueError, match="depth=12"):
        init_shapes(models.MultiTaskModel(models.VGG(depth=12), HEADS), (1, 64, 64, 1))
