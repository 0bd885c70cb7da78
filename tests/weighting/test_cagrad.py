"""CAGrad against hand-computed cases, its KKT conditions and a float64
reference.

The reference is an independent NumPy transcription of
/work/shared/reference/MTL_METHODS.md (loops, float64), not of our jnp code.
"""

import itertools

import numpy as np
import pytest
from scipy import optimize

from mtl_ser.weighting import cagrad
from tests.weighting import mgda_cases as cases


def _np_cagrad_problem(k, c_alpha):
    """LibMTL's objective divided by s = max diag(K), and its gradient."""
    c = c_alpha * np.sqrt(k.mean() + 1e-8) + 1e-8
    s = max(k.diagonal().max(), 1e-8)
    ks, b = k / s, k.mean(1) / s

    def f(x):
        return b @ x + c / np.sqrt(s) * np.sqrt(max(x @ ks @ x, 0) + 1e-8 / s)

    def grad(x):
        return b + c / np.sqrt(s) * ks @ x / np.sqrt(max(x @ ks @ x, 0) + 1e-8 / s)

    return f, grad


def _np_kkt_residual(grad, x, support_tol=1e-7):
    g = grad(x)
    support = x > support_tol
    mu = g[support].mean()
    on = np.abs(g[support] - mu).max()
    off = np.maximum(mu - g[~support], 0).max() if (~support).any() else 0.0
    return max(on, off)


def _np_tight_cagrad_x(k, c_alpha):
    """A tight float64 solve (SLSQP with exact gradients, several starts)."""
    num = len(k)
    f, grad = _np_cagrad_problem(k, c_alpha)
    best = None
    for x0 in [np.full(num, 1.0 / num)] + list(0.9 * np.eye(num) + 0.1 / num):
        res = optimize.minimize(
            f,
            x0,
            jac=grad,
            method="SLSQP",
            bounds=[(0, 1)] * num,
            constraints={
                "type": "eq",
                "fun": lambda x: 1 - x.sum(),
                "jac": lambda x: -np.ones(num),
            },
            options={"ftol": 1e-16, "maxiter": 2000},
        )
        if best is None or res.fun < best.fun:
            best = res
    x = np.clip(best.x, 0, None)
    x = x / x.sum()
    assert _np_kkt_residual(grad, x) < 1e-7  # The reference itself is tight.
    return x


def _np_cagrad_update(g, x, c_alpha, rescale):
    k = g @ g.T
    c = c_alpha * np.sqrt(k.mean() + 1e-8) + 1e-8
    gw = x @ g
    d = g.mean(0) + c / (np.linalg.norm(gw) + 1e-8) * gw
    return d / [1, 1 + c_alpha**2, 1 + c_alpha][rescale]


def _cagrad_x(g):
    """CAGrad's weights from the default method (c_alpha 0.5, rescale 1)."""
    return np.asarray(
        cases.aggregate(cagrad.make_cagrad(cases.config(), (), 1), g).weights
    )


def _gram32(g):
    """K as the method sees it: float32 gradients, products in float64."""
    g32 = np.asarray(g, np.float32).astype(np.float64)
    return g32 @ g32.T


def _well_posed_draws():
    for seed, num in itertools.product(range(4), (2, 3, 5)):
        scale = 10.0 ** (seed - 1.5)  # 0.03 to 30.
        yield seed, num, scale * cases.grads(seed, num, 20, conflict=seed % 2 == 1)


def test_cagrad_weights_match_a_tight_solve():
    # LibMTL's SLSQP gets x to ~1e-4 at unit scale; we ask for 1e-5.
    for seed, num, g in _well_posed_draws():
        want = _np_tight_cagrad_x(_gram32(g), 0.5)
        np.testing.assert_allclose(_cagrad_x(g), want, atol=1e-5, err_msg=(seed, num))


def test_cagrad_weights_satisfy_kkt_conditions():
    # Optimality on the simplex: the gradient of the (scaled) objective is
    # equal on the support and no smaller off it, checked in float64.
    for seed, num in itertools.product(range(6), (2, 3, 5)):
        g = cases.grads(100 + seed, num, 16, conflict=seed % 2 == 0, spread=1.0)
        x = _cagrad_x(g).astype(np.float64)
        assert x.min() >= 0 and abs(x.sum() - 1) < 1e-6
        _, grad = _np_cagrad_problem(_gram32(g), 0.5)
        assert _np_kkt_residual(grad, x / x.sum()) < 1e-5, (seed, num)


def test_cagrad_update_matches_float64_reference():
    method = cagrad.make_cagrad(cases.config(), (), 1)  # c_alpha 0.5, rescale 1.
    for seed, num, g in _well_posed_draws():
        out = cases.aggregate(method, g)
        x = _np_tight_cagrad_x(g @ g.T, 0.5)
        want = _np_cagrad_update(g, x, 0.5, 1)
        np.testing.assert_allclose(out.weights, x, atol=1e-5)
        err = np.linalg.norm(np.asarray(out.update) - want) / np.linalg.norm(want)
        assert err < 1e-5, (seed, num, err)


def test_cagrad_rescale_divisors():
    # The update is d_0 / divisor; d_0 itself is checked with rescale 1 above.
    assert cagrad.rescale_divisor(0.5, 0) == 1.0
    assert cagrad.rescale_divisor(0.5, 1) == 1.25
    assert cagrad.rescale_divisor(0.5, 2) == 1.5
    method = cagrad.make_cagrad(cases.config(cagrad_rescale=2), (), 1)
    assert method.aggregate.keywords == {"c_alpha": 0.5, "rescale": 2}


def test_cagrad_alpha_zero_is_the_mean_gradient():
    # With c_alpha = 0 every rescale divides by 1.
    method = cagrad.make_cagrad(cases.config(cagrad_alpha=0.0, cagrad_rescale=2), (), 1)
    for seed in range(4):
        g = cases.grads(seed, 3, 20, conflict=True)
        out = cases.aggregate(method, g)
        np.testing.assert_allclose(out.update, g.mean(0), rtol=1e-5, atol=1e-6)


def test_cagrad_orthogonal_gradients_by_hand():
    # K = I: x = (1/2, 1/2) by symmetry, ||g0|| = sqrt(1/2), c = ||g0|| / 2,
    # lambda = c / ||g_w|| = 1/2, g = (3/4, 3/4), rescale 1: / 1.25.
    out = cases.aggregate(
        cagrad.make_cagrad(cases.config(), (), 1), [[1.0, 0.0], [0.0, 1.0]]
    )
    np.testing.assert_allclose(out.weights, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(out.update, [0.6, 0.6], rtol=1e-5)
    np.testing.assert_array_equal(out.head_weights, [1, 1])


def test_cagrad_conflicting_gradients():
    # Negative cosine: d makes an acute angle with both gradients (the point of
    # CAGrad), and matches the float64 reference.
    g = np.array([[1.0, 0.0], [-0.5, 1.0]])
    out = cases.aggregate(cagrad.make_cagrad(cases.config(), (), 1), g)
    x = _np_tight_cagrad_x(g @ g.T, 0.5)
    np.testing.assert_allclose(out.weights, x, atol=1e-5)
    np.testing.assert_allclose(out.update, _np_cagrad_update(g, x, 0.5, 1), rtol=1e-5)
    assert (g @ np.asarray(out.update) > 0).all()


def test_cagrad_identical_gradients_by_hand():
    # Any x: g_w = g, ||g0|| = ||g||, lambda = 1/2, d = 1.5 g / 1.25 = 1.2 g.
    out = cases.aggregate(cagrad.make_cagrad(cases.config(), (), 1), [[1.0, 2.0]] * 3)
    np.testing.assert_allclose(out.update, [1.2, 2.4], rtol=1e-5)


def test_cagrad_zero_gradient_task_is_finite():
    # g2 = 0: x = (0, 1) (the zero task is the min of the objective), g_w = 0,
    # so d = mean = (1/2, 0), / 1.25.
    out = cases.aggregate(
        cagrad.make_cagrad(cases.config(), (), 1), [[1.0, 0.0], [0.0, 0.0]]
    )
    np.testing.assert_allclose(out.weights, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out.update, [0.4, 0.0], rtol=1e-5, atol=1e-7)
    out = cases.aggregate(cagrad.make_cagrad(cases.config(), (), 1), np.zeros((3, 4)))
    assert np.isfinite(out.weights).all()
    np.testing.assert_array_equal(out.update, np.zeros(4))


def test_cagrad_rejects_bad_rescale():
    with pytest.raises(ValueError, match="weighting.cagrad_rescale"):
        cagrad.make_cagrad(cases.config(cagrad_rescale=3), (), 1)
