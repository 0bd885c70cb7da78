"""The train step's speed settings: CPU library fusions and the shared norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.errors import ConfigError
from mtl_ser.training import experiment, sharding, xla_options


@pytest.mark.parametrize(
    "value, kinds",
    [
        ("xla", None),
        ("none", ()),
        ("dot,reduce", ("dot", "reduce")),
        (" conv ", ("conv",)),
    ],
)
def test_library_fusions_parse(value, kinds):
    assert xla_options.parse_library_fusions(value) == kinds


@pytest.mark.parametrize("value", ["", "dot,", "convolution", "dot;reduce"])
def test_unknown_library_fusions_name_the_field(value):
    with pytest.raises(ConfigError, match="train.cpu_library_fusions"):
        xla_options.parse_library_fusions(value)


def test_known_option_passes_through():
    options = xla_options.compiler_options_for("dot,reduce")
    assert options == {
        "xla_cpu_experimental_ynn_fusion_type": (
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
        )
    }


@pytest.mark.parametrize(
    "name, value",
    [
        ("_OPTION", "xla_cpu_no_such_option"),  # Another XLA dropped the option,
        ("LIBRARY_FUSIONS", dict.fromkeys(["dot", "reduce"], "NO_SUCH")),  # a value.
    ],
)
def test_option_this_xla_rejects_gives_way_with_one_warning(
    name, value, monkeypatch, capsys
):
    """Under another jax XLA may not know the option, and the compile would
    fail: XLA's defaults instead, and one warning line naming the field."""
    monkeypatch.setattr(xla_options, name, value)
    xla_options._xla_accepts.cache_clear()
    try:
        results = [xla_options.compiler_options_for("dot,reduce") for _ in range(2)]
    finally:
        xla_options._xla_accepts.cache_clear()
    assert results == [None, None]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # Checked once per process.
    assert "train.cpu_library_fusions" in lines[0] and jax.__version__ in lines[0]
    double = jax.jit(lambda x: 2 * x, compiler_options=results[0])
    np.testing.assert_array_equal(double(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def _hlo(config):
    mesh = sharding.make_mesh(jax.devices()[:1])
    exp = experiment.Experiment(config, mesh=mesh, verbose=False)
    batch = sharding.from_process_local(next(exp.train_iterator()), exp.mesh)
    compiled = exp.train_fn.lower(exp.state, batch, exp.store).compile()
    return compiled.as_text(), exp, batch


def test_fusion_choice_reaches_the_compiled_step_and_keeps_its_result(smoke_config):
    """With "none" no op goes to YNNPACK; with "dot,reduce" some do, and the
    convolutions stay with XLA. One step from the same state and batch gives
    the same loss and nearly the same parameters either way."""
    results = {}
    for value in ("none", "dot,reduce", "xla"):
        smoke_config.train.cpu_library_fusions = value
        hlo, exp, batch = _hlo(smoke_config)
        state, metrics = exp.train_fn(exp.state, batch, exp.store)
        results[value] = (hlo, jax.device_get(metrics), jax.device_get(state.params))
    none_hlo, dot_hlo, xla_hlo = (results[v][0] for v in ("none", "dot,reduce", "xla"))
    assert "__ynn_fusion" not in none_hlo
    assert "__ynn_fusion" in dot_hlo
    assert "convolution(" in dot_hlo  # The model's convolutions are there...
    # ...and XLA's default hands some of them to YNNPACK; ours does not.
    assert _convs_in_ynn(xla_hlo) > 0 and _convs_in_ynn(dot_hlo) == 0
    ref_loss = results["xla"][1]["train/loss/total"]
    for value in ("none", "dot,reduce"):
        _, metrics, params = results[value]
        np.testing.assert_allclose(metrics["train/loss/total"], ref_loss, rtol=1e-5)
        for a, b in zip(
            jax.tree.leaves(params), jax.tree.leaves(results["xla"][2]), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def test_vgg_pooling_keeps_convolutions_out_of_ynnpack(smoke_config):
    """VGG pools 2x2 windows after BN and ReLU. A reshape-and-max pool's
    gradient divides by a reduce_sum, and XLA put that reduce, with the
    convolution feeding it, into a YNNPACK fusion; layers.max_pool must give
    XLA no such reduce."""
    smoke_config.model.name = "vgg11"
    smoke_config.model.width = 1 / 16
    smoke_config.model.batch_norm = True
    smoke_config.train.cpu_library_fusions = "dot,reduce"
    hlo, _, _ = _hlo(smoke_config)
    assert "__ynn_fusion" in hlo and hlo.count("convolution(") >= 8
    assert _convs_in_ynn(hlo) == 0


def _convs_in_ynn(hlo: str) -> int:
    """Convolutions inside computations that a YNNPACK fusion calls."""
    called = set()
    for line in hlo.splitlines():
        if "__ynn_fusion" in line and "calls=" in line:
            called.add(line.split("calls=")[1].split(",")[0].split("}")[0].strip("%"))
    count, current = 0, None
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            current = line.split(" ")[0].strip("%")
        if current in called and "convolution(" in line:
            count += 1
    return count
