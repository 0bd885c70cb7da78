"""UPGrad against hand-computed cases, the KKT conditions of its QPs, its
defining property (no conflict with any task, up to the ridge) and a float64
reference of MTL_METHODS.md written here from the spec: every QP solved by
enumerating its active sets."""

import collections
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtl_ser.weighting import upgrad

KEY = jax.random.PRNGKey(0)
EPS = 1e-4  # LibMTL's UPGrad_norm_eps and UPGrad_reg_eps.


def _cfg(**kw):
    base = dict(name="upgrad", rep_grad=False, upgrad_norm_eps=EPS, upgrad_reg_eps=EPS)
    return ml_collections.ConfigDict({**base, **kw})


_JITTED = {}
_TRACES = collections.Counter()
# Every case is zero-padded to this many tasks and parameters: one compile per
# setting. A zero-gradient task is decoupled from the others (its row of K is
# 0 and the ridge eps_r tr(K) does not change), so padding T tasks to _TASKS
# only changes the bounds 1/T to 1/_TASKS: every v_i, hence a and d, scales
# by T/_TASKS, and `_upgrad` scales back (test_padding_only_rescales checks
# that against an unpadded compile).
_TASKS, _WIDTH = 5, 16


def _method(**cfg):
    key = tuple(sorted(cfg.items()))
    if key not in _JITTED:
        method = upgrad.make_upgrad(_cfg(**cfg), (), 1)

        def aggregate(*args, **kwargs):
            _TRACES[key] += 1
            return method.aggregate(*args, **kwargs)

        _JITTED[key] = method, jax.jit(aggregate), key
    return _JITTED[key]


def _pad(grads):
    grads = np.asarray(grads, np.float32)
    padded = np.zeros((_TASKS, _WIDTH), np.float32)
    padded[: grads.shape[0], : grads.shape[1]] = grads
    return padded


def _upgrad(grads, step=0, **cfg):
    """The jitted aggregate on padded gradients, cut and rescaled to T tasks."""
    method, fn, _ = _method(**cfg)
    num, size = np.shape(grads)
    params, state = method.init(_TASKS)
    out = fn(
        params,
        state,
        jnp.ones(_TASKS, jnp.float32),
        jnp.asarray(_pad(grads)),
        step=jnp.asarray(step, jnp.int32),
        rng=KEY,
    )
    np.testing.assert_allclose(out.weights[num:], 1 / _TASKS, rtol=1e-6)
    np.testing.assert_array_equal(out.update[size:], 0)
    back = _TASKS / num
    return out._replace(
        update=np.asarray(out.update[:size], float) * back,
        weights=np.asarray(out.weights[:num], float) * back,
        head_weights=out.head_weights[:num],
        rep_coeffs=out.rep_coeffs[:num],
    )


def _draws(seed, conflict=False, shapes=((2, 6), (3, 9), (5, 12), (5, 16))):
    """Gradients [T, P], exactly float32, norms spread by lognormal(0.7)."""
    rng = np.random.default_rng(seed)
    for num_tasks, num_params in shapes:
        g = rng.normal(size=(num_tasks, num_params))
        g *= np.exp(rng.normal(0, 0.7, (num_tasks, 1)))
        if conflict:  # Pull alternate tasks against a common direction.
            base = rng.normal(size=num_params)
            g += 1.2 * base * np.where(np.arange(num_tasks) % 2, -1, 1)[:, None]
        yield g.astype(np.float32).astype(np.float64)


def _gram32(g):
    """K as the method computes it (float32 products), in float64."""
    g32 = jnp.asarray(g, jnp.float32)
    return np.asarray(jnp.matmul(g32, g32.T, precision="highest"), np.float64)


# ---------------------------------------------------------------- reference


def qp_ref(a, lower):
    """argmin v^T A v / 2, v >= lower: the active set meeting the KKT
    conditions (free: (A v)_j = 0, v_j >= l_j; bound: (A v)_j >= 0)."""
    num = len(a)
    found = []
    for size in range(num + 1):
        for free in itertools.combinations(range(num), size):
            free = list(free)
            bound = [j for j in range(num) if j not in free]
            v = lower.copy()
            if free:
                rhs = -a[np.ix_(free, bound)] @ lower[bound]
                v[free] = np.linalg.solve(a[np.ix_(free, free)], rhs)
            z = a @ v
            tol = 1e-12 * (np.abs(a) @ np.abs(v))
            if (v >= lower - tol / np.diag(a)).all() and (
                z[bound] >= -tol[bound]
            ).all():
                found.append(v)
    assert found
    for v in found[1:]:  # Degenerate ties only: the minimiser is unique.
        np.testing.assert_allclose(v, found[0], rtol=1e-9, atol=1e-12)
    return found[0]


def upgrad_ref(g, norm_eps=EPS, reg_eps=EPS):
    """LibMTL's UPGrad in float64: a and d."""
    k = _gram32(g)
    num = len(k)
    khat = k / np.trace(k) if np.trace(k) >= norm_eps else np.zeros_like(k)
    khat = khat + reg_eps * np.eye(num)
    v = np.array([qp_ref(khat, np.eye(num)[i] / num) for i in range(num)])
    a = v.sum(0)
    return a, a @ g, v, khat


# ---------------------------------------------------------------- by hand


def test_orthogonal_gradients_by_hand():
    # K diagonal: each QP is separable and every bound is active: v_i = e_i/T.
    grads = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.25]])
    out = _upgrad(grads)
    np.testing.assert_allclose(out.weights, [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(out.update, grads.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out.head_weights, [1, 1, 1])
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1, 1])
    assert out.state == {} and out.param_grads == {}


def test_conflicting_pair_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): K = [[1, -1], [-1, 2]], tr 3, e = eps_r.
    # QP 1 (v >= (1/2, 0)): at v = (1/2, 0), (K^ v)_2 = -1/6 < 0, so v_2 is
    #   free: (2/3 + e) v_2 = 1/6, v_2 = 1 / (4 + 6e); (K^ v)_1 > 0 holds.
    # QP 2 (v >= (0, 1/2)): (K^ v)_1 = -1/6 < 0, so (1/3 + e) v_1 = 1/6,
    #   v_1 = 1 / (2 + 6e); (K^ v)_2 > 0 holds.
    grads = np.array([[1.0, 0.0], [-1.0, 1.0]])
    out = _upgrad(grads)
    e = EPS
    a = np.array([0.5 + 1 / (2 + 6 * e), 0.5 + 1 / (4 + 6 * e)])  # ~ (1, 3/4).
    np.testing.assert_allclose(out.weights, a, rtol=1e-6)
    np.testing.assert_allclose(out.update, a @ grads, rtol=1e-6)  # ~ (1/4, 3/4)
    assert (grads @ out.update > 0).all()  # The mean (0, 1/2) has d . g1 = 0.


def test_opposite_gradients_by_hand():
    # g2 = -g1: K^ = [[1, -1], [-1, 1]] / 2 + e I. QP 1: v_2 is freed,
    # (1/2 + e) v_2 = 1/4; by symmetry a_1 = a_2 = 1/2 + 1 / (2 + 4e), d = 0.
    g = np.array([1.0, -2.0, 2.0])
    out = _upgrad(np.stack([g, -g]))
    np.testing.assert_allclose(out.weights, [0.5 + 1 / (2 + 4 * EPS)] * 2, rtol=1e-6)
    np.testing.assert_allclose(out.update, [0, 0, 0], atol=1e-6)


def test_no_conflict_gives_the_mean_gradient():
    # If K >= 0 entrywise, v_i = e_i/T meets the KKT conditions (K^ e_i >= 0,
    # every bound active), and the QP is strictly convex: a = 1/T.
    for g in _draws(1):
        g = g + 3.0 * np.abs(g).max() * np.ones(g.shape[1])  # A shared pull.
        assert (g @ g.T > 0).all()
        out = _upgrad(g)
        num = len(g)
        np.testing.assert_allclose(out.weights, [1 / num] * num, rtol=1e-6)
        np.testing.assert_allclose(out.update, g.mean(0), rtol=1e-5)
    same = np.array([[1.0, 2.0, -2.0]] * 2)
    np.testing.assert_allclose(_upgrad(same).update, same[0], rtol=1e-6)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("conflict", [False, True])
def test_matches_float64_active_set_enumeration(conflict):
    for g in _draws(2 + conflict, conflict):
        a, d, _, _ = upgrad_ref(g)
        assert not conflict or (a > 1.01 / len(g)).any()  # Some bound freed.
        out = _upgrad(g)
        np.testing.assert_allclose(out.weights, a, rtol=1e-5)
        np.testing.assert_allclose(
            out.update, d, rtol=1e-5, atol=1e-5 * np.abs(d).max()
        )


def test_update_conflicts_with_no_task():
    # K^ a = sum_i mu_i >= 0, i.e. d . g_t >= -eps_r tr(K) a_t, and
    # a_t >= v_t,t >= 1/T. The draws are chosen so the mean gradient does
    # conflict with some task.
    conflicted = 0
    for seed in range(3):
        for g in _draws(10 + seed, conflict=True):
            out = _upgrad(g)
            num = len(g)
            a, d = out.weights, out.update
            assert (a >= 1 / num * (1 - 1e-6)).all()
            trace = np.trace(g @ g.T)
            slack = 1e-5 * np.abs(g).sum(1) * np.abs(d).max()  # float32 d.
            assert (g @ d >= -EPS * trace * a - slack).all()
            conflicted += (g @ g.mean(0) < 0).any()
    assert conflicted >= 3


# upgrad_weights on K zero-padded to [5, 5], the epsilons traced: one compile.
_WEIGHTS = jax.jit(
    lambda k, norm_eps, reg_eps: upgrad.upgrad_weights(
        k, norm_eps=norm_eps, reg_eps=reg_eps
    )
)


def _weights(g, norm_eps=EPS):
    """(a [T], v [T, T]) for gradients g, through the padded compile."""
    num = len(g)
    padded = np.zeros((_TASKS, _TASKS), np.float32)
    padded[:num, :num] = _gram32(g)
    _, v = _WEIGHTS(jnp.asarray(padded), norm_eps, EPS)
    v = np.asarray(v, float)[:num, :num] * _TASKS / num
    return v.sum(0), v


def test_each_qp_meets_its_kkt_conditions():
    # Primal feasibility v_i >= e_i/T, dual feasibility mu = K^ v_i >= 0 and
    # complementary slackness mu_j (v_ij - l_j) = 0, checked in float64.
    for g in _draws(20, conflict=True, shapes=((5, 16), (5, 8), (3, 8))):
        _, v = _weights(g)
        k = _gram32(g)
        num = len(k)
        khat = k / np.trace(k) + EPS * np.eye(num)
        for i, vi in enumerate(v):
            lower = np.eye(num)[i] / num
            mu = khat @ vi
            scale = np.abs(khat) @ np.abs(vi)
            assert (vi >= lower * (1 - 1e-6)).all()
            assert (mu >= -1e-6 * scale).all()
            slack = mu * (vi - lower)
            np.testing.assert_allclose(slack, 0, atol=1e-6 * scale.max() / num)
        assert (v > np.eye(num) / num * (1 + 1e-6)).any()  # Some bound is free.


def test_scale_invariant_above_norm_eps():
    g = next(_draws(30, conflict=True))
    small, large = _upgrad(0.5 * g), _upgrad(8.0 * g)
    np.testing.assert_allclose(small.weights, large.weights, rtol=1e-5)


# ---------------------------------------------------------------- edge cases


def test_trace_below_norm_eps_gives_the_mean_gradient():
    # tr(K) = 2e-10 < eps_n: K^ = eps_r I, v_i = e_i/T, although g2 = -g1.
    g = np.array([[1e-5, 0.0], [-1e-5, 1e-6]])
    out = _upgrad(g)
    np.testing.assert_allclose(out.weights, [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out.update, g.mean(0), rtol=1e-5)
    # With eps_n = 0 the same gradients are combined as any other scale.
    solved, _ = _weights(g, norm_eps=0.0)
    np.testing.assert_allclose(solved, _upgrad(g * 1e5).weights, rtol=1e-5)
    assert solved.max() > 0.6


def test_zero_gradient_task_is_finite():
    grads = np.array([[3.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, -1.0]])
    out = _upgrad(grads)
    a, d, _, _ = upgrad_ref(grads)
    assert np.isfinite(out.weights).all()
    np.testing.assert_allclose(out.weights, a, rtol=1e-5)
    np.testing.assert_allclose(out.weights[1], 1 / 3, rtol=1e-6)  # Its own bound.
    np.testing.assert_allclose(out.update, d, rtol=1e-5)
    out = _upgrad(np.zeros((3, 4)))
    np.testing.assert_allclose(out.weights, [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_array_equal(out.update, np.zeros(4))


def test_padding_only_rescales():
    # What the padding in these tests relies on (see _TASKS).
    g = next(_draws(40, conflict=True, shapes=((3, 8),)))
    method = upgrad.make_upgrad(_cfg(), (), 1)
    out = jax.jit(method.aggregate)({}, {}, jnp.ones(3), jnp.asarray(g, jnp.float32))
    padded = _upgrad(g)
    np.testing.assert_allclose(padded.weights, out.weights, rtol=1e-6)
    np.testing.assert_allclose(padded.update, out.update, rtol=1e-5, atol=1e-6)


def test_box_qp_budget_and_fallback():
    k = jnp.array([[1.0, -1.0], [-1.0, 2.0]])
    lower = jnp.array([0.5, 0.0])
    qp = jax.jit(upgrad.box_qp, static_argnames="max_pivots")
    v, ok, passes = qp(k, 3e-4, lower, max_pivots=0)
    assert not ok and int(passes) == 0
    np.testing.assert_array_equal(v, lower)  # Last iterate, within bounds.
    v, ok, passes = qp(k, 3e-4, lower)
    assert ok and int(passes) == 1  # One pivot frees v_2.
    np.testing.assert_allclose(v, [0.5, 0.5 / (2 + 3e-4)], rtol=1e-6)


# ---------------------------------------------------------------- method


@pytest.mark.parametrize(
    "field, bad",
    [
        ("upgrad_norm_eps", -1.0),
        ("upgrad_norm_eps", float("nan")),
        ("upgrad_reg_eps", 0.0),
        ("upgrad_reg_eps", -1e-4),
        ("upgrad_reg_eps", float("inf")),
    ],
)
def test_rejects_bad_settings(field, bad):
    with pytest.raises(ValueError, match=f"weighting.{field}"):
        upgrad.make_upgrad(_cfg(**{field: bad}), (), 1)


def test_builder_and_flags():
    assert set(upgrad.BUILDERS) == {"upgrad"}
    method = upgrad.BUILDERS["upgrad"](_cfg(upgrad_norm_eps=0.0), (), 1)
    assert method.name == "upgrad" and method.needs_grads
    assert not method.rep_grad_ok and method.init(3) == ({}, {})
    assert method.aggregate.keywords == {"norm_eps": 0.0, "reg_eps": EPS}


def test_runs_under_jit_without_retracing():
    method, _, key = _method()
    _, state = method.init(3)
    _upgrad(np.ones((3, 9)))  # Compiled (if not already).
    before = _TRACES[key]
    rng = np.random.default_rng(0)
    for step in range(3):
        out = _upgrad(rng.normal(size=(3, 9)), step)
        assert jax.tree.structure(out.state) == jax.tree.structure(state)
        assert out.update.shape == (9,) and out.weights.shape == (3,)
        for v in (out.head_weights, out.rep_coeffs):
            assert v.shape == (3,) and v.dtype == jnp.float32
        assert np.isfinite(out.update).all() and np.isfinite(out.weights).all()
    assert _TRACES[key] == before
