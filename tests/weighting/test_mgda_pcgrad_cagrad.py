"""MGDA, PCGrad and CAGrad against hand-computed cases and float64 references.

The references below are independent NumPy transcriptions of
/work/shared/reference/MTL_METHODS.md (loops, float64), not of our jnp code.
"""

import collections
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import optimize

from mtl_ser.weighting import cagrad, mgda, pcgrad

KEY = jax.random.PRNGKey(0)


def _cfg(**kw):
    base = dict(
        name="mgda",
        rep_grad=False,
        mgda_normalization="none",
        cagrad_alpha=0.5,
        cagrad_rescale=1,
    )
    return ml_collections.ConfigDict({**base, **kw})


def _grads(seed, num_tasks, size, conflict=False, spread=0.5):
    """Random per-task gradients [T, P] in float64 (norms lognormal(spread))."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(num_tasks, size))
    g *= rng.lognormal(sigma=spread, size=(num_tasks, 1))
    if conflict:  # Task 1 nearly opposite to task 0.
        g[1] = -0.8 * g[0] + 0.3 * rng.normal(size=size) * np.linalg.norm(g[0]) / 4
    return g


_JITTED = {}
_TRACES = collections.Counter()


def _key(method):
    return method.name, tuple(sorted(getattr(method.aggregate, "keywords", {}).items()))


def _jitted(method):
    """One jitted aggregate per method and setting (compiles are the cost)."""
    key = _key(method)
    if key not in _JITTED:

        def aggregate(*args, **kwargs):
            _TRACES[key] += 1
            return method.aggregate(*args, **kwargs)

        _JITTED[key] = jax.jit(aggregate)
    return _JITTED[key]


_WIDTH = 24  # Every case is zero-padded to this P: one compile per T.


def _aggregate(method, grads, losses=None, rng=KEY, step=0):
    """Runs the jitted aggregate; zero columns change nothing but the width."""
    grads = np.asarray(grads, np.float32)
    num, size = grads.shape
    padded = np.zeros((num, _WIDTH), np.float32)
    padded[:, :size] = grads
    if losses is None:
        losses = np.ones(num)
    params, state = method.init(num)
    out = _jitted(method)(
        params,
        state,
        jnp.asarray(losses, jnp.float32),
        jnp.asarray(padded),
        step=jnp.asarray(step, jnp.int32),
        rng=rng,
    )
    np.testing.assert_array_equal(out.update[size:], 0)
    return out._replace(update=out.update[:size])


# ------------------------------------------------------------------------ MGDA
# Float64 transcription of the Sener-Koltun routine as MTL_METHODS.md gives it.


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
    out = _aggregate(mgda.make_mgda(_cfg(), (), 1), grads)
    np.testing.assert_allclose(out.weights, [0.64, 0.36], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.92, 1.44], rtol=1e-6)
    # l2: unit gradients, equal weights, update on the *normalised* gradients.
    out = _aggregate(mgda.make_mgda(_cfg(mgda_normalization="l2"), (), 1), grads)
    np.testing.assert_allclose(out.weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out.rep_coeffs, out.weights)  # Raw lambda.
    np.testing.assert_array_equal(out.head_weights, [1, 1])


def test_mgda_conflicting_gradients_by_hand():
    # a = 1, b = -1, c = 2: gamma = 3/5, update (0.2, 0.4) _|_ (g1 - g2).
    out = _aggregate(mgda.make_mgda(_cfg(), (), 1), [[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(out.weights, [0.6, 0.4], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.2, 0.4], rtol=1e-6, atol=1e-7)


def test_mgda_identical_gradients_clip_to_0999():
    out = _aggregate(mgda.make_mgda(_cfg(), (), 1), [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(out.weights, [0.999, 0.001], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_mgda_zero_gradient_or_zero_loss_is_finite(normalization):
    # Task 1 has an all-zero gradient, task 2 a zero loss (LibMTL: NaN).
    method = mgda.make_mgda(_cfg(mgda_normalization=normalization), (), 1)
    grads = [[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]
    out = _aggregate(method, grads, losses=[0.5, 0.3, 0.0])
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
    method = mgda.make_mgda(_cfg(mgda_normalization=normalization), (), 1)
    for seed, num in itertools.product(range(3), sizes):
        grads = _grads(seed, num, 8, conflict=seed == 1)
        losses = np.random.default_rng(seed).uniform(0.2, 2.0, num)
        out = _aggregate(method, grads, losses)
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
            grads = _grads(seed, num, 6, conflict=seed % 2 == 0)
            m = grads @ grads.T
            got = np.asarray(solve(jnp.asarray(m, jnp.float64)))
            np.testing.assert_allclose(got, _np_min_norm(m), atol=1e-10)


def test_min_norm_value_is_near_the_true_minimum():
    # Defining property: lambda (nearly) minimises ||G^T lambda||^2 on the
    # simplex. The 0.999 / 0.001 clipping leaves a gap of at most about
    # 2e-3 max_t ||g_t||^2; the routine can never beat the true minimum.
    method = mgda.make_mgda(_cfg(), (), 1)
    for seed, num in itertools.product(range(4), (2, 3, 5)):
        grads = _grads(seed, num, 6, conflict=seed % 2 == 0)
        m = grads @ grads.T
        lam = np.asarray(_aggregate(method, grads).weights, np.float64)
        best = _np_exact_min_norm(m)
        gap = lam @ m @ lam - best
        scale = m.diagonal().max()
        assert -1e-6 * scale <= gap <= 2e-3 * scale, (seed, num, gap / scale)


def test_mgda_rep_mode_puts_raw_lambda_on_rep_grads():
    method = mgda.make_mgda(_cfg(mgda_normalization="l2"), (), 1)
    assert method.rep_grad_ok and method.needs_grads
    out = _aggregate(method, [[2.0, 0.0], [0.0, 8.0]])
    # lambda on normalised gradients is (1/2, 1/2); rep mode gets it raw.
    np.testing.assert_allclose(out.rep_coeffs, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, [0.5, 0.5], rtol=1e-6)


def test_mgda_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="weighting.mgda_normalization"):
        mgda.make_mgda(_cfg(mgda_normalization="max"), (), 1)


# ---------------------------------------------------------------------- PCGrad


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
    out = _aggregate(pcgrad.make_pcgrad(_cfg(), (), 1), g)
    np.testing.assert_allclose(out.update, [0.5, 1.5], rtol=1e-6)
    np.testing.assert_allclose(out.weights, [2.0, 1.5], rtol=1e-6)
    np.testing.assert_array_equal(out.head_weights, [1, 1])
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1])


def test_pcgrad_no_negative_component_after_projection():
    # Two conflicting tasks: each projected gradient has no negative part along
    # the other task's gradient.
    for seed in range(5):
        g = _grads(seed, 2, 10, conflict=True)
        assert g[0] @ g[1] < 0
        orders = pcgrad.task_orders(jax.random.PRNGKey(seed), 2)
        coeffs = np.asarray(_PC_COEFFS(jnp.asarray(g @ g.T, jnp.float32), orders))
        pc = coeffs @ g
        tol = 1e-5 * np.linalg.norm(g, axis=1).prod()
        assert pc[0] @ g[1] >= -tol and pc[1] @ g[0] >= -tol


def test_pcgrad_orthogonal_gives_the_plain_sum():
    g = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    out = _aggregate(pcgrad.make_pcgrad(_cfg(), (), 1), g)
    np.testing.assert_allclose(out.update, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.weights, [1.0, 1.0, 1.0])


def test_pcgrad_identical_gradients_give_twice_the_gradient():
    out = _aggregate(pcgrad.make_pcgrad(_cfg(), (), 1), [[1.0, -2.0], [1.0, -2.0]])
    np.testing.assert_allclose(out.update, [2.0, -4.0])


def test_pcgrad_zero_gradient_task_is_finite():
    g = [[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]]
    out = _aggregate(pcgrad.make_pcgrad(_cfg(), (), 1), g)
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
    method = pcgrad.make_pcgrad(_cfg(), (), 1)
    for seed, num in itertools.product(range(3), (2, 3, 5)):
        g = _grads(seed, num, 12, conflict=True)
        rng = jax.random.PRNGKey(seed)
        out = _aggregate(method, g, rng=rng)
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


# ---------------------------------------------------------------------- CAGrad


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
    return np.asarray(_aggregate(cagrad.make_cagrad(_cfg(), (), 1), g).weights)


def _gram32(g):
    """K as the method sees it: float32 gradients, products in float64."""
    g32 = np.asarray(g, np.float32).astype(np.float64)
    return g32 @ g32.T


def _well_posed_draws():
    for seed, num in itertools.product(range(4), (2, 3, 5)):
        scale = 10.0 ** (seed - 1.5)  # 0.03 to 30.
        yield seed, num, scale * _grads(seed, num, 20, conflict=seed % 2 == 1)


def test_cagrad_weights_match_a_tight_solve():
    # LibMTL's SLSQP gets x to ~1e-4 at unit scale; we ask for 1e-5.
    for seed, num, g in _well_posed_draws():
        want = _np_tight_cagrad_x(_gram32(g), 0.5)
        np.testing.assert_allclose(_cagrad_x(g), want, atol=1e-5, err_msg=(seed, num))


def test_cagrad_weights_satisfy_kkt_conditions():
    # Optimality on the simplex: the gradient of the (scaled) objective is
    # equal on the support and no smaller off it, checked in float64.
    for seed, num in itertools.product(range(6), (2, 3, 5)):
        g = _grads(100 + seed, num, 16, conflict=seed % 2 == 0, spread=1.0)
        x = _cagrad_x(g).astype(np.float64)
        assert x.min() >= 0 and abs(x.sum() - 1) < 1e-6
        _, grad = _np_cagrad_problem(_gram32(g), 0.5)
        assert _np_kkt_residual(grad, x / x.sum()) < 1e-5, (seed, num)


def test_cagrad_update_matches_float64_reference():
    method = cagrad.make_cagrad(_cfg(), (), 1)  # c_alpha 0.5, rescale 1.
    for seed, num, g in _well_posed_draws():
        out = _aggregate(method, g)
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
    method = cagrad.make_cagrad(_cfg(cagrad_rescale=2), (), 1)
    assert method.aggregate.keywords == {"c_alpha": 0.5, "rescale": 2}


def test_cagrad_alpha_zero_is_the_mean_gradient():
    # With c_alpha = 0 every rescale divides by 1.
    method = cagrad.make_cagrad(_cfg(cagrad_alpha=0.0, cagrad_rescale=2), (), 1)
    for seed in range(4):
        g = _grads(seed, 3, 20, conflict=True)
        out = _aggregate(method, g)
        np.testing.assert_allclose(out.update, g.mean(0), rtol=1e-5, atol=1e-6)


def test_cagrad_orthogonal_gradients_by_hand():
    # K = I: x = (1/2, 1/2) by symmetry, ||g0|| = sqrt(1/2), c = ||g0|| / 2,
    # lambda = c / ||g_w|| = 1/2, g = (3/4, 3/4), rescale 1: / 1.25.
    out = _aggregate(cagrad.make_cagrad(_cfg(), (), 1), [[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(out.weights, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(out.update, [0.6, 0.6], rtol=1e-5)
    np.testing.assert_array_equal(out.head_weights, [1, 1])


def test_cagrad_conflicting_gradients():
    # Negative cosine: d makes an acute angle with both gradients (the point of
    # CAGrad), and matches the float64 reference.
    g = np.array([[1.0, 0.0], [-0.5, 1.0]])
    out = _aggregate(cagrad.make_cagrad(_cfg(), (), 1), g)
    x = _np_tight_cagrad_x(g @ g.T, 0.5)
    np.testing.assert_allclose(out.weights, x, atol=1e-5)
    np.testing.assert_allclose(out.update, _np_cagrad_update(g, x, 0.5, 1), rtol=1e-5)
    assert (g @ np.asarray(out.update) > 0).all()


def test_cagrad_identical_gradients_by_hand():
    # Any x: g_w = g, ||g0|| = ||g||, lambda = 1/2, d = 1.5 g / 1.25 = 1.2 g.
    out = _aggregate(cagrad.make_cagrad(_cfg(), (), 1), [[1.0, 2.0]] * 3)
    np.testing.assert_allclose(out.update, [1.2, 2.4], rtol=1e-5)


def test_cagrad_zero_gradient_task_is_finite():
    # g2 = 0: x = (0, 1) (the zero task is the min of the objective), g_w = 0,
    # so d = mean = (1/2, 0), / 1.25.
    out = _aggregate(cagrad.make_cagrad(_cfg(), (), 1), [[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(out.weights, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out.update, [0.4, 0.0], rtol=1e-5, atol=1e-7)
    out = _aggregate(cagrad.make_cagrad(_cfg(), (), 1), np.zeros((3, 4)))
    assert np.isfinite(out.weights).all()
    np.testing.assert_array_equal(out.update, np.zeros(4))


def test_cagrad_rejects_bad_rescale():
    with pytest.raises(ValueError, match="weighting.cagrad_rescale"):
        cagrad.make_cagrad(_cfg(cagrad_rescale=3), (), 1)


# ---------------------------------------------------------------------- common

_BUILDERS = {**mgda.BUILDERS, **pcgrad.BUILDERS, **cagrad.BUILDERS}


def test_builders_are_registered_with_the_right_flags():
    assert set(_BUILDERS) == {"mgda", "pcgrad", "cagrad"}
    for name, build in _BUILDERS.items():
        method = build(_cfg(name=name), (), 1)
        assert method.name == name and method.needs_grads
        assert method.rep_grad_ok == (name == "mgda")
        assert method.init(3) == ({}, {})


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad"])
def test_runs_under_jit_with_stable_state(name):
    # Through the shared jitted aggregate: step an int32 array, rng a key.
    method = _BUILDERS[name](_cfg(name=name, mgda_normalization="loss+"), (), 1)
    params, state = method.init(3)
    traces = None
    for i in range(3):
        g = _grads(i, 3, 20, conflict=True)
        out = _aggregate(method, g, [1.0, 0.5, 2.0], jax.random.fold_in(KEY, i), i)
        traces = traces or _TRACES[_key(method)]
        assert jax.tree.structure(out.state) == jax.tree.structure(state)
        state = out.state
        assert out.update.shape == (20,) and out.update.dtype == jnp.float32
        for v in (out.weights, out.head_weights, out.rep_coeffs):
            assert v.shape == (3,) and v.dtype == jnp.float32
        assert out.param_grads == {}
        assert np.isfinite(out.update).all() and np.isfinite(out.weights).all()
    assert _TRACES[_key(method)] == traces  # No retrace across steps.
