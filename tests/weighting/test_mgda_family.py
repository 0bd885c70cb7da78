"""MGDA, PCGrad and CAGrad together: their builders' flags, and each runs
under jit with a state of stable shape and no retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import cagrad, mgda, pcgrad
from tests.weighting import mgda_cases as cases

_BUILDERS = {**mgda.BUILDERS, **pcgrad.BUILDERS, **cagrad.BUILDERS}


def test_builders_are_registered_with_the_right_flags():
    assert set(_BUILDERS) == {"mgda", "pcgrad", "cagrad"}
    for name, build in _BUILDERS.items():
        method = build(cases.config(name=name), (), 1)
        assert method.name == name and method.needs_grads
        assert method.rep_grad_ok == (name == "mgda")
        assert method.init(3) == ({}, {})


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad"])
def test_runs_under_jit_with_stable_state(name):
    # Through the shared jitted aggregate: step an int32 array, rng a key.
    method = _BUILDERS[name](cases.config(name=name, mgda_normalization="loss+"), (), 1)
    params, state = method.init(3)
    traces = None
    for i in range(3):
        g = cases.grads(i, 3, 20, conflict=True)
        out = cases.aggregate(
            method, g, [1.0, 0.5, 2.0], jax.random.fold_in(cases.KEY, i), i
        )
        traces = traces or cases.TRACES[cases.trace_key(method)]
        assert jax.tree.structure(out.state) == jax.tree.structure(state)
        state = out.state
        assert out.update.shape == (20,) and out.update.dtype == jnp.float32
        for v in (out.weights, out.head_weights, out.rep_coeffs):
            assert v.shape == (3,) and v.dtype == jnp.float32
        assert out.param_grads == {}
        assert np.isfinite(out.update).all() and np.isfinite(out.weights).all()
    assert cases.TRACES[cases.trace_key(method)] == traces  # No retrace across steps.
