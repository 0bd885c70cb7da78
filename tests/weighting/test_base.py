"""Loss weighting: each method against values computed by hand."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtl_ser import tasks as tasks_lib
from mtl_ser import weighting

TASKS = tasks_lib.make_tasks("emotion,gender,arousal", "a,b,c,d", "mse")
LOSSES = jnp.array([1.2, 0.5, 2.0])


def _cfg(name, **kw):
    base = dict(
        name=name, fixed_weights="", uncertainty_form="libmtl", init_log_var=-0.5
    )
    return ml_collections.ConfigDict({**base, **kw})


def test_equal_sums_losses_with_unit_weights():
    method = weighting.make_method(_cfg("equal"), TASKS)
    params, state = method.init(3)
    total, weights, _ = method.combine(params, state, LOSSES)
    assert float(total) == pytest.approx(3.7)
    np.testing.assert_array_equal(weights, [1, 1, 1])


def test_fixed_uses_the_given_weights():
    method = weighting.make_method(_cfg("fixed", fixed_weights="1,0.5,2"), TASKS)
    params, state = method.init(3)
    total, weights, _ = method.combine(params, state, LOSSES)
    assert float(total) == pytest.approx(1.2 + 0.25 + 4.0)
    np.testing.assert_allclose(weights, [1, 0.5, 2])


def test_fixed_needs_one_weight_per_task():
    with pytest.raises(ValueError, match="weighting.fixed_weights"):
        weighting.make_method(_cfg("fixed", fixed_weights="1,2"), TASKS)


def test_uncertainty_libmtl_form_by_hand():
    # s = -0.5 everywhere: weight 1/(2 e^-0.5) = 0.8243606, regulariser s/2 = -0.25.
    method = weighting.make_method(_cfg("uncertainty"), TASKS)
    params, state = method.init(3)
    total, weights, _ = method.combine(params, state, LOSSES)
    np.testing.assert_allclose(weights, [0.8243606] * 3, rtol=1e-6)
    assert float(total) == pytest.approx(0.8243606 * 3.7 - 0.75, rel=1e-6)


def test_uncertainty_kendall_form_by_hand():
    # Classification: e^-s L + s/2; regression: L / (2 e^s) + s/2.
    method = weighting.make_method(
        _cfg("uncertainty", uncertainty_form="kendall"), TASKS
    )
    params = {"log_var": jnp.array([0.0, np.log(2.0), np.log(4.0)])}
    total, weights, _ = method.combine(params, {}, LOSSES)
    np.testing.assert_allclose(weights, [1.0, 0.5, 0.125], rtol=1e-6)
    expected = 1.2 + 0.25 + 0.25 + 0.5 * (0 + np.log(2.0) + np.log(4.0))
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_uncertainty_gradient_matches_libmtl_formula():
    # d/ds_t [L_t / (2 e^s_t) + s_t / 2] = 1/2 - L_t / (2 e^s_t).
    method = weighting.make_method(_cfg("uncertainty"), TASKS)
    params, state = method.init(3)
    grads = jax.grad(lambda p: method.combine(p, state, LOSSES)[0])(params)
    expected = 0.5 - np.asarray(LOSSES) / (2 * np.exp(-0.5))
    np.testing.assert_allclose(grads["log_var"], expected, rtol=1e-6)


def test_uncertainty_revised_regulariser_by_hand():
    # Liebel & Koerner: L / (2 sigma^2) + log(1 + sigma^2), sigma^2 = e^s.
    method = weighting.make_method(_cfg("uncertainty_revised", init_log_var=0.0), TASKS)
    params, state = method.init(3)
    total, weights, _ = method.combine(params, state, LOSSES)
    np.testing.assert_allclose(weights, [0.5] * 3)
    assert float(total) == pytest.approx(0.5 * 3.7 + 3 * np.log(2.0), rel=1e-6)


def test_unknown_method_names_the_field():
    with pytest.raises(ValueError, match="weighting.name='bogus'"):
        weighting.make_method(_cfg("bogus"), TASKS)
