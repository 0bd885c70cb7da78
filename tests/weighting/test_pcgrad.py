"""PCGrad against hand-computed cases and a float64 reference.

The reference is an independent NumPy transcription of
/work/shared/reference/MTL_METHODS.md (loops, float64), not of our jnp code.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from mtl_ser.weighting import pcgrad
from tests.weighting import mgda_cases as cases


def _np_pcgrad(grads, orders):
    """PCGrad on the vectors themselves, float64. Returns (update, pc)."""
    pc = grads.copy()
    for i in range(len(grads)):
        for j in orders[i]:
            dot = pc[i] @ grads[j]
            if dot < 0:
                pc[i] = pc[i] - dot / (grads[j] @ grads[j] + 1e-8) * grads[j]
    return pc.sum(0), pc


_PC_COEFFS = jax.jit(pcgrad.pcgrad_coefficients)


def test_pcgrad_conflicting_pair_by_hand():
    # Whatever the order: pc1 = g1 + g2 / 2 = (0.5, 0.5), pc2 = g2 + g1.
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    out = cases.aggregate(pcgrad.make_pcgrad(cases.config(), (), 1), g)
    np.testing.assert_allclose(out.update, [0.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(out.weights, [2.0, 1.5], rtol=1e-6)
    np.testing.assert_array_equal(out.head_weights, [1, 1])
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1])


def test_pcgrad_no_negative_component_after_projection():
    # Two conflicting tasks: each projected gradient has no negative part along
    # the other task's gradient.
    for seed in range(5):
        g = cases.grads(seed, 2, 10, conflict=True)
        assert g[0] @ g[1] < 0
        orders = pcgrad.task_orders(jax.random.PRNGKey(seed), 2)
        coeffs = np.asarray(_PC_COEFFS(jnp.asarray(g @ g.T, jnp.float32), orders))
        pc = coeffs @ g
        tol = 1e-5 * np.linalg.norm(g, axis=1).prod()
        assert pc[0] @ g[1] >= -tol and pc[1] @ g[0] >= -tol


def test_pcgrad_orthogonal_gives_the_plain_sum():
    g = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    out = cases.aggregate(pcgrad.make_pcgrad(cases.config(), (), 1), g)
    np.testing.assert_allclose(out.update, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.weights, [1.0, 1.0, 1.0])


def test_pcgrad_identical_gradients_give_twice_the_gradient():
    out = cases.aggregate(
        pcgrad.make_pcgrad(cases.config(), (), 1), [[1.0, -2.0], [1.0, -2.0]]
    )
    np.testing.assert_allclose(out.update, [2.0, -4.0])


def test_pcgrad_zero_gradient_task_is_finite():
    g = [[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]]
    out = cases.aggregate(pcgrad.make_pcgrad(cases.config(), (), 1), g)
    assert np.isfinite(out.update).all()
    np.testing.assert_allclose(out.weights[1], 1.0)  # Never projected onto.


def test_pcgrad_self_term_fires_when_pc_turns_against_its_own_gradient():
    # Task 0 visits 1, 2, then itself: pc0 = g0 + 0.9 g1 + 2.1 g2 = (0, -0.35),
    # now against g0, so the self-term adds 0.35 / 3.25 g0.
    g = np.array([[1.5, 1.0], [-0.5, -1.5], [-0.5, 0.0]])
    orders = jnp.array([[1, 2, 0], [0, 1, 2], [0, 1, 2]])
    coeffs = _PC_COEFFS(jnp.asarray(g @ g.T, jnp.float32), orders)
    np.testing.assert_allclose(coeffs[0], [1 + 0.35 / 3.25, 0.9, 2.1], rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(coeffs) @ g, _np_pcgrad(g, np.asarray(orders))[1], atol=1e-5
    )


def test_pcgrad_matches_float64_reference():
    method = pcgrad.make_pcgrad(cases.config(), (), 1)
    for seed, num in itertools.product(range(3), (2, 3, 5)):
        g = cases.grads(seed, num, 12, conflict=True)
        rng = jax.random.PRNGKey(seed)
        out = cases.aggregate(method, g, rng=rng)
        update, _ = _np_pcgrad(g, np.asarray(pcgrad.task_orders(rng, num)))
        scale = np.linalg.norm(g, axis=1).max()
        np.testing.assert_allclose(out.update, update, atol=2e-5 * scale * num)
        # The weights are the exact coefficients: solve update = a^T G.
        a = np.linalg.lstsq(g.T, update, rcond=None)[0]
        np.testing.assert_allclose(out.weights, a, rtol=1e-4, atol=1e-4)


def test_pcgrad_orders_are_uniform_permutations_of_all_tasks():
    keys = jax.random.split(jax.random.PRNGKey(1), 3000)
    orders = np.asarray(jax.jit(jax.vmap(lambda k: pcgrad.task_orders(k, 3)))(keys))
    assert (np.sort(orders, axis=-1) == np.arange(3)).all()  # Each includes i.
    codes = orders[..., 0] * 9 + orders[..., 1] * 3 + orders[..., 2]
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) == 6
    np.testing.assert_allclose(counts / codes.size, 1 / 6, atol=0.015)
    assert (orders[:, 0] != orders[:, 1]).any(axis=-1).mean() > 0.5  # Per-task.
