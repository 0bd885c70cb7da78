"""GradNorm, IMTL, Aligned-MTL, Nash-MTL and DB-MTL together: their builders'
flags, and each runs under jit with a state of stable shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import aligned_mtl, db_mtl, gradnorm, imtl, nash_mtl
from tests.weighting import gradient_cases as cases

BUILDERS = {
    **gradnorm.BUILDERS,
    **imtl.BUILDERS,
    **aligned_mtl.BUILDERS,
    **nash_mtl.BUILDERS,
    **db_mtl.BUILDERS,
}


def test_builders_and_flags():
    assert set(BUILDERS) == {"gradnorm", "imtl", "aligned_mtl", "nash_mtl", "db_mtl"}
    rep_ok = {
        name: b(cases.config(), (), 1).rep_grad_ok for name, b in BUILDERS.items()
    }
    assert rep_ok == {
        "gradnorm": True,
        "imtl": True,
        "aligned_mtl": True,
        "nash_mtl": False,
        "db_mtl": False,
    }
    assert all(b(cases.config(), (), 1).needs_grads for b in BUILDERS.values())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_runs_under_jit_with_stable_state(name):
    num_tasks, num_params = 3, 7
    cfg = cases.config(nash_update_every=2)
    method = BUILDERS[name](cfg, (), 2)
    params, state = cases.init(method, num_tasks, num_params)
    fn = jax.jit(method.aggregate)
    rng = np.random.default_rng(0)
    sig_params, sig_state = cases.tree_sig(params), cases.tree_sig(state)
    for step in range(5):  # Crosses GradNorm's epoch 0 and Nash's reuse steps.
        grads = jnp.asarray(rng.normal(size=(num_tasks, num_params)), jnp.float32)
        losses = jnp.asarray(rng.uniform(0.5, 2, num_tasks), jnp.float32)
        out = fn(params, state, losses, grads, step=jnp.int32(step), rng=cases.RNG)
        assert cases.tree_sig(out.state) == sig_state
        assert cases.tree_sig(out.param_grads) == sig_params
        for field in ("weights", "head_weights", "rep_coeffs"):
            assert getattr(out, field).shape == (num_tasks,)
        assert out.update.shape == (num_params,)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
        state = out.state
        params = jax.tree.map(lambda p, g: p - 1e-2 * g, params, out.param_grads)
