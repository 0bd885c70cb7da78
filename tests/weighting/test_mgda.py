"""MGDA against hand-computed cases and a float64 reference.

The reference is an independent NumPy transcription of
/work/shared/reference/MTL_METHODS.md (loops, float64), not of our jnp code.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser.weighting import mgda
from tests.weighting import mgda_cases as cases


def _np_two_point(a, b, c):
    if b >= a:
        return 0.999, a
    if b >= c:
        return 0.001, c
    gamma = (c - b) / (a + c - 2 * b)
    return gamma, c + gamma * (b - c)


def _np_project(y):
    m = len(y)
    s = sorted(y, reverse=True)
    tau = (sum(y) - 1.0) / m
    total = 0.0
    for i in range(m - 1):
        total += s[i]
        if (total - 1.0) / (i + 1) > s[i + 1]:
            tau = (total - 1.0) / (i + 1)
            break
    return np.maximum(np.asarray(y) - tau, 0.0)


def _np_min_norm(m):
    num = len(m)
    best, lam = 1e8, None
    for i in range(num):
        for j in range(i + 1, num):
            gamma, cost = _np_two_point(m[i, i], m[i, j], m[j, j])
            if cost < best:
                best, lam = cost, np.zeros(num)
                lam[i], lam[j] = gamma, 1.0 - gamma
    if num == 2:
        return lam
    for _ in range(250):
        p = -m @ lam
        p = p - p.mean()
        cands_neg = [-lam[k] / p[k] for k in range(num) if p[k] < 0]
        cands_pos = [(1 - lam[k]) / p[k] for k in range(num) if p[k] > 0]
        cands_neg = [t for t in cands_neg if t > 1e-7]
        cands_pos = [t for t in cands_pos if t > 1e-7]
        t = min(cands_neg) if cands_neg else 1.0
        t = min([t] + cands_pos)
        y = _np_project(lam + t * p)
        gamma, _ = _np_two_point(lam @ m @ lam, lam @ m @ y, y @ m @ y)
        new = gamma * lam + (1 - gamma) * y
        if np.abs(new - lam).sum() < 1e-5:
            return lam
        lam = new
    return lam


def _np_mgda(grads, losses, normalization):
    norms = np.linalg.norm(grads, axis=1)
    n = {
        "none": np.ones(len(grads)),
        "l2": norms,
        "loss": losses,
        "loss+": losses * norms,
    }[normalization]
    n = np.where(np.abs(n) >= 1e-12, n, 1.0)  # Our guard (LibMTL: 0/0).
    hat = grads / n[:, None]
    lam = _np_min_norm(hat @ hat.T)
    return lam @ hat, lam


def _np_exact_min_norm(m):
    """min_{x in simplex} x^T m x, exactly: the best KKT point over supports."""
    num, best = len(m), np.inf
    for size in range(1, num + 1):
        for support in itertools.combinations(range(num), size):
            idx = list(support)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * m[np.ix_(idx, idx)]
            kkt[:size, size] = kkt[size, :size] = 1
            rhs = np.zeros(size + 1)
            rhs[size] = 1
            x_s = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size]
            if x_s.min() >= -1e-12:
                x = np.zeros(num)
                x[idx] = x_s
                best = min(best, x @ m @ x)
    return best


def test_project_to_simplex_is_the_euclidean_projection():
    rng = np.random.default_rng(0)
    project = jax.jit(mgda.project_to_simplex)
    for m in (1, 2, 3, 5, 8):
        for _ in range(5):
            y = rng.normal(size=m) * 2
            z = np.asarray(project(jnp.asarray(y, jnp.float32)))
            np.testing.assert_allclose(z, _np_project(y), atol=1e-6)
            assert z.min() >= 0 and abs(z.sum() - 1) < 1e-6
            # No point of the simplex is closer to y.
            w = rng.dirichlet(np.ones(m), size=200)
            assert np.linalg.norm(y - z) <= np.linalg.norm(y - w, axis=1).min() + 1e-6


def test_two_point_solver_by_hand():
    # v1.v2 >= v1.v1: clipped to 0.999 (not 1), cost v1.v1.
    gamma, cost = mgda.min_norm_two_point(1.0, 2.0, 5.0)
    assert float(gamma) == pytest.approx(0.999) and float(cost) == 1.0
    # v1.v2 >= v2.v2: clipped to 0.001 (not 0), cost v2.v2.
    gamma, cost = mgda.min_norm_two_point(5.0, 2.0, 1.0)
    assert float(gamma) == pytest.approx(0.001) and float(cost) == 1.0
    # Orthogonal unit vectors: the midpoint, squared norm 1/2.
    gamma, cost = mgda.min_norm_two_point(1.0, 0.0, 1.0)
    assert float(gamma) == pytest.approx(0.5) and float(cost) == pytest.approx(0.5)


def test_mgda_orthogonal_gradients_by_hand():
    grads = [[3.0, 0.0], [0.0, 4.0]]
    # none: gamma = 16 / 25 on g1, update (1.92, 1.44), orthogonal to g1 - g2.
    out = cases.aggregate(mgda.make_mgda(cases.config(), (), 1), grads)
    np.testing.assert_allclose(out.weights, [0.64, 0.36], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.92, 1.44], rtol=1e-6)
    # l2: unit gradients, equal weights, update on the *normalised* gradients.
    out = cases.aggregate(
        mgda.make_mgda(cases.config(mgda_normalization="l2"), (), 1), grads
    )
    np.testing.assert_allclose(out.weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out.rep_coeffs, out.weights)  # Raw lambda.
    np.testing.assert_array_equal(out.head_weights, [1, 1])


def test_mgda_conflicting_gradients_by_hand():
    # a = 1, b = -1, c = 2: gamma = 3/5, update (0.2, 0.4) _|_ (g1 - g2).
    out = cases.aggregate(
        mgda.make_mgda(cases.config(), (), 1), [[1.0, 0.0], [-1.0, 1.0]]
    )
    np.testing.assert_allclose(out.weights, [0.6, 0.4], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.2, 0.4], rtol=1e-6, atol=1e-7)


def test_mgda_identical_gradients_clip_to_0999():
    out = cases.aggregate(
        mgda.make_mgda(cases.config(), (), 1), [[1.0, 2.0], [1.0, 2.0]]
    )
    np.testing.assert_allclose(out.weights, [0.999, 0.001], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_mgda_zero_gradient_or_zero_loss_is_finite(normalization):
    # Task 1 has an all-zero gradient, task 2 a zero loss (LibMTL: NaN).
    method = mgda.make_mgda(cases.config(mgda_normalization=normalization), (), 1)
    grads = [[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]
    out = cases.aggregate(method, grads, losses=[0.5, 0.3, 0.0])
    assert np.isfinite(out.update).all() and np.isfinite(out.weights).all()
    assert abs(float(out.weights.sum()) - 1) < 1e-5
    # The zero gradient is the min-norm point: (nearly) all weight on it.
    assert float(out.weights[1]) > 0.99
    update, lam = _np_mgda(np.array(grads), np.array([0.5, 0.3, 0.0]), normalization)
    np.testing.assert_allclose(out.weights, lam, atol=1e-6)
    np.testing.assert_allclose(out.update, update, atol=1e-6)


@pytest.mark.parametrize(
    "normalization, sizes",
    [("none", (2, 3, 5)), ("l2", (3,)), ("loss", (3,)), ("loss+", (3, 5))],
)
def test_mgda_matches_float64_reference(normalization, sizes):
    method = mgda.make_mgda(cases.config(mgda_normalization=normalization), (), 1)
    for seed, num in itertools.product(range(3), sizes):
        grads = cases.grads(seed, num, 8, conflict=seed == 1)
        losses = np.random.default_rng(seed).uniform(0.2, 2.0, num)
        out = cases.aggregate(method, grads, losses)
        update, lam = _np_mgda(grads, losses, normalization)
        # The routine is chaotic over many iterations (a 1e-15 change in M can
        # move lambda by 1e-3), so float32 is compared loosely on lambda and
        # tightly on the min-norm value it reaches.
        np.testing.assert_allclose(out.weights, lam, atol=2e-3)
        scale = np.abs(update).max() + np.linalg.norm(grads, axis=1).max()
        np.testing.assert_allclose(out.update, update, atol=3e-3 * scale)
        got = np.asarray(out.update, np.float64)
        assert abs(got @ got - update @ update) <= 1e-4 * (update @ update) + 1e-6


def test_min_norm_solve_is_the_float64_routine_exactly():
    solve = jax.jit(mgda.min_norm_solve)
    with jax.enable_x64(True):
        for seed, num in itertools.product(range(4), (3, 5)):  # T = 2: no loop.
            grads = cases.grads(seed, num, 6, conflict=seed % 2 == 0)
            m = grads @ grads.T
            got = np.asarray(solve(jnp.asarray(m, jnp.float64)))
            np.testing.assert_allclose(got, _np_min_norm(m), atol=1e-10)


def test_min_norm_value_is_near_the_true_minimum():
    # Defining property: lambda (nearly) minimises ||G^T lambda||^2 on the
    # simplex. The 0.999 / 0.001 clipping leaves a gap of at most about
    # 2e-3 max_t ||g_t||^2; the routine can never beat the true minimum.
    method = mgda.make_mgda(cases.config(), (), 1)
    for seed, num in itertools.product(range(4), (2, 3, 5)):
        grads = cases.grads(seed, num, 6, conflict=seed % 2 == 0)
        m = grads @ grads.T
        lam = np.asarray(cases.aggregate(method, grads).weights, np.float64)
        best = _np_exact_min_norm(m)
        gap = lam @ m @ lam - best
        scale = m.diagonal().max()
        assert -1e-6 * scale <= gap <= 2e-3 * scale, (seed, num, gap / scale)


def test_mgda_rep_mode_puts_raw_lambda_on_rep_grads():
    method = mgda.make_mgda(cases.config(mgda_normalization="l2"), (), 1)
    assert method.rep_grad_ok and method.needs_grads
    out = cases.aggregate(method, [[2.0, 0.0], [0.0, 8.0]])
    # lambda on normalised gradients is (1/2, 1/2); rep mode gets it raw.
    np.testing.assert_allclose(out.rep_coeffs, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.5, 0.5], rtol=1e-6)


def test_mgda_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="weighting.mgda_normalization"):
        mgda.make_mgda(cases.config(mgda_normalization="max"), (), 1)
