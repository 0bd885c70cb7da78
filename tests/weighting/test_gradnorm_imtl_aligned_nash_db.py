"""GradNorm, IMTL, Aligned-MTL, Nash-MTL and DB-MTL against hand-computed cases,
their defining properties and independent float64 NumPy references of
MTL_METHODS.md (written here from the spec, loops and all)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.optimize

from mtl_ser.weighting import aligned_mtl, db_mtl, gradnorm, imtl, nash_mtl

RNG = jax.random.PRNGKey(0)
SHAPES = [(2, 6), (3, 9), (5, 12)]  # (T, P) for the random draws.


def _cfg(**kw):
    base = dict(
        name="",
        rep_grad=False,
        gradnorm_alpha=1.5,
        nash_update_every=1,
        nash_iterations=20,
        nash_max_norm=1.0,
        db_beta=0.9,
        db_beta_sigma=0.0,
    )
    return ml_collections.ConfigDict({**base, **kw})


def _build(builder, steps_per_epoch=1, **cfg):
    return builder(_cfg(**cfg), (), steps_per_epoch)


def _draws(seed=0, conflict=False):
    """(T, G [T, P], losses [T]) per shape, exactly representable in float32."""
    rng = np.random.default_rng(seed)
    for num_tasks, num_params in SHAPES:
        grads = rng.normal(size=(num_tasks, num_params))
        grads *= np.exp(rng.normal(0, 0.7, (num_tasks, 1)))
        if conflict:  # Pull some tasks against a common direction.
            base = rng.normal(size=num_params)
            grads += 0.8 * base * np.where(np.arange(num_tasks) % 2, -1, 1)[:, None]
        grads = grads.astype(np.float32).astype(np.float64)
        losses = rng.uniform(0.2, 2.0, num_tasks).astype(np.float32).astype(float)
        yield num_tasks, grads, losses


def _call(method, params, state, losses, grads, step=0):
    return method.aggregate(
        params,
        state,
        jnp.asarray(losses, jnp.float32),
        jnp.asarray(grads, jnp.float32),
        step=jnp.asarray(step, jnp.int32),
        rng=RNG,
    )


def _init(method, num_tasks, num_params):
    if method.name == "db_mtl":
        return method.init(num_tasks, num_params=num_params)
    return method.init(num_tasks)


def _tree_sig(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


# ---------------------------------------------------------------- references


def gradnorm_ref(scale, losses, first_means, grads, alpha):
    """GradNorm epoch >= 1 in float64; dL_grad/ds by central differences."""
    num_tasks = len(scale)

    def weights(s):
        e = np.exp(s - s.max())
        return num_tasks * e / e.sum()

    norms = np.array([np.sqrt(np.sum(g * g)) for g in grads])
    n0 = weights(scale) * norms
    rel = losses / first_means
    target = n0.mean() * (rel / rel.mean()) ** alpha  # Held fixed (stopgrad).

    def objective(s):
        return np.abs(weights(s) * norms - target).sum()

    grad = np.zeros(num_tasks)
    for t in range(num_tasks):
        h = np.zeros(num_tasks)
        h[t] = 1e-6
        grad[t] = (objective(scale + h) - objective(scale - h)) / 2e-6
    w = weights(scale)
    return w, w @ grads, grad, objective, (n0, target)


def imtl_ref(scale, grads):
    """LibMTL's IMTL-G literally: inverse of D U^T, alpha_1 = 1 - sum."""
    g = np.exp(scale)[:, None] * grads
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = g[0:1] - g[1:]
    uu = u[0:1] - u[1:]
    rest = g[0] @ uu.T @ np.linalg.inv(d @ uu.T)
    alpha = np.concatenate([[1 - rest.sum()], rest])
    return alpha, alpha @ g


def aligned_ref(grads):
    """LibMTL's Aligned-MTL: sort eigenpairs descending, slice to the rank."""
    m = grads @ grads.T
    lam, vecs = np.linalg.eigh(m)
    tol = lam.max() * m.shape[0] * np.finfo(np.float32).eps
    rank = int(np.sum(lam > tol))
    order = np.argsort(-lam)
    lam, vecs = lam[order][:rank], vecs[:, order][:, :rank]
    b = np.sqrt(lam[-1]) * (vecs @ np.diag(1 / np.sqrt(lam)) @ vecs.T)
    alpha = b.sum(0)
    return alpha, alpha @ grads, b


def nash_ref(gram):
    """FairGrad's solve (alpha = 1): least squares on K a - 1/a, a > 0."""
    num_tasks = gram.shape[0]
    sol = scipy.optimize.least_squares(
        lambda a: gram @ a - 1 / a,
        np.ones(num_tasks) / num_tasks,
        bounds=(0, np.inf),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    return sol.x


def db_ref(losses_seq, grads_seq, beta, sigma):
    """DB-MTL over several calls, loop by loop."""
    num_tasks, num_params = grads_seq[0].shape
    buf = np.zeros((num_tasks, num_params))
    for k, (losses, grads) in enumerate(
        zip(losses_seq, grads_seq, strict=True), start=1
    ):
        h = np.array([grads[t] / (losses[t] + 1e-8) for t in range(num_tasks)])
        buf = h + (beta / k**sigma) * (buf - h)
    norms = np.array([np.linalg.norm(b) for b in buf])
    scales = norms.max() / (norms + 1e-8)
    update = sum(scales[t] * buf[t] for t in range(num_tasks))
    return scales, update, buf


# ---------------------------------------------------------------- GradNorm


def _gradnorm_after_epoch0(num_tasks, epoch0_losses, steps_per_epoch=2):
    """A GradNorm method and state after the steps of epoch 0."""
    method = _build(gradnorm.make_gradnorm, steps_per_epoch)
    params, state = method.init(num_tasks)
    zeros = np.zeros((num_tasks, 4))
    for step, losses in enumerate(epoch0_losses):
        state = _call(method, params, state, losses, zeros, step).state
    return method, params, state


def test_gradnorm_epoch0_is_equal_weighting():
    method = _build(gradnorm.make_gradnorm, 3)
    _, state = method.init(2)
    params = {"loss_scale": jnp.array([0.3, -0.4])}  # Unused in epoch 0.
    grads = np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 4.0]])
    out = _call(method, params, state, [0.5, 2.0], grads, step=2)
    np.testing.assert_allclose(out.update, [1.0, 1.0, 4.0])
    np.testing.assert_array_equal(out.weights, [1, 1])
    np.testing.assert_array_equal(out.rep_coeffs, [1, 1])
    np.testing.assert_array_equal(out.param_grads["loss_scale"], [0, 0])
    np.testing.assert_allclose(out.state["history"]["sum"], [0.5, 2.0])


def test_gradnorm_uses_epoch0_mean_loss():
    # Epoch-0 means (1, 2) and (3, 2) -> (2, 2); step 2 opens epoch 1.
    method, params, state = _gradnorm_after_epoch0(2, [[1.0, 2.0], [3.0, 2.0]])
    grads = np.array([[3.0, 0.0], [0.0, 1.0]])
    out = _call(method, params, state, [2.0, 2.0], grads, step=2)
    np.testing.assert_allclose(out.state["history"]["first"], [2.0, 2.0])
    # Equal relative losses: target = mean N = 2, N = (3, 1); s_1 goes down.
    # dL/dw = (+3, -1); J_w = 2 (diag p - p p^T) with p = 1/2: (2, -2).
    np.testing.assert_allclose(out.param_grads["loss_scale"], [2.0, -2.0])
    np.testing.assert_allclose(out.weights, [1.0, 1.0])
    np.testing.assert_allclose(out.update, [3.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_gradnorm_matches_reference(seed):
    for num_tasks, grads, losses in _draws(seed):
        rng = np.random.default_rng(seed + num_tasks)
        epoch0 = rng.uniform(0.5, 2.0, (2, num_tasks)).astype(np.float32)
        method, _, state = _gradnorm_after_epoch0(num_tasks, epoch0)
        scale = rng.normal(0, 0.5, num_tasks).astype(np.float32)
        params = {"loss_scale": jnp.asarray(scale)}
        out = _call(method, params, state, losses, grads, step=2)
        w, update, ds, _, (n, target) = gradnorm_ref(
            scale.astype(float), losses, epoch0.astype(float).mean(0), grads, 1.5
        )
        _, n_jnp, target_jnp = gradnorm.gradnorm_scale_grad(
            jnp.asarray(scale),
            jnp.asarray(losses, jnp.float32),
            jnp.asarray(epoch0.mean(0)),
            jnp.asarray(grads, jnp.float32),
            alpha=1.5,
        )
        np.testing.assert_allclose(n_jnp, n, rtol=1e-5)
        np.testing.assert_allclose(target_jnp, target, rtol=1e-5)
        np.testing.assert_allclose(out.weights, w, rtol=1e-5)
        np.testing.assert_allclose(out.rep_coeffs, w, rtol=1e-5)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.param_grads["loss_scale"], ds, atol=1e-4)


def test_gradnorm_step_moves_norms_toward_targets():
    # Plain gradient descent on s with the returned gradient lowers
    # sum |N_t - target_t| on a fixed G (targets held, as LibMTL's stopgrad).
    for num_tasks, grads, losses in _draws(3):
        rng = np.random.default_rng(num_tasks)
        epoch0 = rng.uniform(0.5, 2.0, (2, num_tasks)).astype(np.float32)
        method, params, state = _gradnorm_after_epoch0(num_tasks, epoch0)
        out = _call(method, params, state, losses, grads, step=2)
        ds = np.asarray(out.param_grads["loss_scale"], float)
        assert np.abs(ds).max() > 0
        scale = np.ones(num_tasks)
        _, _, _, objective, _ = gradnorm_ref(
            scale, losses, epoch0.astype(float).mean(0), grads, 1.5
        )
        assert objective(scale - 1e-3 * ds) < objective(scale)


def test_gradnorm_keeps_normalising_by_epoch0_in_later_epochs():
    # Epoch 0 mean (1, 4), epoch 1 mean (3, 3); at step 4 (epoch 2) the
    # relative losses are L / (1, 4) = (2, 1) -> r = (4/3, 2/3).
    epochs = [[1.0, 4.0], [1.0, 4.0], [3.0, 3.0], [3.0, 3.0]]
    method, params, state = _gradnorm_after_epoch0(2, epochs)
    grads = np.array([[1.0, 0.0], [0.0, 1.0]])  # N = (1, 1), mean 1.
    out = _call(method, params, state, [2.0, 4.0], grads, step=4)
    np.testing.assert_allclose(out.state["history"]["first"], [1.0, 4.0])
    # target = (4/3, 2/3)^1.5: task 1 below its target, task 2 above.
    # dL/dw = (-1, +1); J_w^T at p = 1/2: (-1, +1).
    np.testing.assert_allclose(out.param_grads["loss_scale"], [-1.0, 1.0])


def test_gradnorm_zero_gradient_and_zero_first_loss_stay_finite():
    method, params, state = _gradnorm_after_epoch0(3, [[0.0, 1.0, 2.0]], 1)
    grads = np.array([[0.0, 0.0], [1.0, -1.0], [1.0, 1.0]])
    out = _call(method, params, state, [0.0, 1.0, 3.0], grads, step=1)
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(leaf))
    assert np.abs(out.param_grads["loss_scale"]).max() > 0


def test_gradnorm_identical_gradients():
    # Same gradient, same relative loss: N_t equal, targets = N, gradient 0.
    method, params, state = _gradnorm_after_epoch0(2, [[1.0, 1.0]], 1)
    g = [1.0, 2.0, -2.0]
    out = _call(method, params, state, [0.5, 0.5], [g, g], step=1)
    np.testing.assert_allclose(out.param_grads["loss_scale"], [0, 0], atol=1e-6)
    np.testing.assert_allclose(out.update, 2 * np.array(g), rtol=1e-6)


# ---------------------------------------------------------------- IMTL


def _imtl(scale, grads, losses=None):
    method = _build(imtl.make_imtl)
    num_tasks = len(grads)
    params = {"loss_scale": jnp.asarray(scale, jnp.float32)}
    losses = np.ones(num_tasks) if losses is None else losses
    return _call(method, params, {}, losses, grads)


def test_imtl_orthogonal_by_hand():
    # d = a1 (2, 0) + a2 (0, 1), equal projections 2 a1 = a2, a1 + a2 = 1.
    out = _imtl([0.0, 0.0], np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out.weights, [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(out.update, [2 / 3, 2 / 3], rtol=1e-6)


def test_imtl_conflicting_by_hand():
    # g1 = (1, 0), g2 = (-1, 1)/sqrt(2) * 2: d . u1 = d . u2 with a1 + a2 = 1.
    g2 = np.array([-1.0, 1.0]) * np.sqrt(2.0)
    out = _imtl([0.0, 0.0], np.array([[1.0, 0.0], g2]))
    u1, u2 = np.array([1.0, 0.0]), g2 / 2.0
    # d = a1 g1 + (1 - a1) g2; solve (d . (u1 - u2)) = 0 for a1 by hand.
    a1 = -(g2 @ (u1 - u2)) / ((np.array([1.0, 0.0]) - g2) @ (u1 - u2))
    np.testing.assert_allclose(out.weights, [a1, 1 - a1], rtol=1e-5)


@pytest.mark.parametrize("conflict", [False, True])
def test_imtl_matches_reference(conflict):
    for num_tasks, grads, losses in _draws(4, conflict):
        scale = np.random.default_rng(num_tasks).normal(0, 0.5, num_tasks)
        scale = scale.astype(np.float32).astype(float)
        out = _imtl(scale, grads, losses)
        alpha, update = imtl_ref(scale, grads)
        np.testing.assert_allclose(out.weights, alpha, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.head_weights, np.exp(scale), rtol=1e-6)
        np.testing.assert_allclose(
            out.param_grads["loss_scale"], np.exp(scale) * losses - 1, rtol=1e-5
        )
        np.testing.assert_allclose(
            out.rep_coeffs, alpha * np.exp(scale), rtol=1e-3, atol=1e-4
        )


def test_imtl_update_projects_equally_on_every_unit_gradient():
    for _, grads, _ in _draws(5, conflict=True):
        out = _imtl(np.zeros(len(grads)), grads)
        units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
        proj = units @ np.asarray(out.update, float)
        np.testing.assert_allclose(proj, proj[0], rtol=1e-3)
        assert abs(float(np.sum(out.weights)) - 1) < 1e-5


@pytest.mark.parametrize("zero", [0, 2])
def test_imtl_zero_gradient_is_dropped_not_nan(zero):
    rng = np.random.default_rng(zero)
    grads = rng.normal(size=(3, 5))
    grads[zero] = 0.0
    out = _imtl([0.1, -0.2, 0.3], grads)
    assert np.all(np.isfinite(out.update)) and np.all(np.isfinite(out.weights))
    assert float(out.weights[zero]) == 0.0
    # The others are balanced as two-task IMTL.
    others = [t for t in range(3) if t != zero]
    alpha, update = imtl_ref(np.array([0.1, -0.2, 0.3])[others], grads[others])
    np.testing.assert_allclose(np.asarray(out.weights)[others], alpha, rtol=1e-4)
    np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-6)


def test_imtl_degenerate_gradients_stay_finite():
    g = np.array([1.0, 2.0, -3.0])
    out = _imtl([0.0, 0.0], np.stack([g, g]))  # D U^T = 0: LibMTL raises.
    np.testing.assert_allclose(out.weights, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.update, g, rtol=1e-6)
    out = _imtl([0.0, 0.0], np.zeros((2, 3)))
    np.testing.assert_array_equal(out.update, [0, 0, 0])
    assert np.all(np.isfinite(out.weights))


# ---------------------------------------------------------------- Aligned-MTL


def _aligned(grads):
    method = _build(aligned_mtl.make_aligned_mtl)
    return _call(method, {}, {}, np.ones(len(grads)), grads)


def test_aligned_orthogonal_by_hand():
    # M = diag(4, 1): B = sqrt(1) diag(1/2, 1), alpha = (1/2, 1), d = (1, 1).
    out = _aligned(np.array([[2.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(out.weights, [0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("conflict", [False, True])
def test_aligned_matches_reference(conflict):
    for _, grads, _ in _draws(6, conflict):
        out = _aligned(grads)
        alpha, update, _ = aligned_ref(grads)
        np.testing.assert_allclose(out.weights, alpha, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-4)
        np.testing.assert_array_equal(out.rep_coeffs, out.weights)


def test_aligned_rank_deficient_matches_reference():
    rng = np.random.default_rng(7)
    grads = rng.normal(size=(2, 3)) @ rng.normal(size=(3, 8))
    grads = np.concatenate([grads, grads[:1] - 2 * grads[1:]])  # T = 3, rank 2.
    grads = grads.astype(np.float32).astype(float)
    out = _aligned(grads)
    alpha, update, _ = aligned_ref(grads)
    np.testing.assert_allclose(out.update, update, rtol=1e-3, atol=1e-3)


def test_aligned_task_gradients_are_orthogonal_with_equal_norms():
    for _, grads, _ in _draws(8, conflict=True):
        bmat = aligned_mtl.aligned_matrix(jnp.asarray(grads @ grads.T, jnp.float32))
        aligned = np.asarray(bmat, float) @ grads
        gram = aligned @ aligned.T
        lam_min = np.linalg.eigvalsh(grads @ grads.T).min()
        np.testing.assert_allclose(gram, lam_min * np.eye(len(grads)), atol=1e-3)
        assert np.linalg.cond(aligned) < 1.001


def test_aligned_degenerate_gradients_stay_finite():
    g = np.array([1.0, 2.0, -3.0])
    out = _aligned(np.stack([g, g]))  # Rank 1: the zero eigenvalue is dropped.
    np.testing.assert_allclose(out.weights, [1.0, 1.0], rtol=1e-5)
    out = _aligned(np.stack([g, np.zeros(3)]))
    np.testing.assert_allclose(out.weights, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.update, g, rtol=1e-6)
    out = _aligned(np.zeros((2, 3)))  # LibMTL raises here.
    np.testing.assert_array_equal(out.weights, [0, 0])
    np.testing.assert_array_equal(out.update, [0, 0, 0])


# ---------------------------------------------------------------- Nash-MTL


def _nash(grads, state=None, step=0, **kw):
    method = _build(nash_mtl.make_nash_mtl, **kw)
    if state is None:
        _, state = method.init(len(grads))
    return _call(method, {}, state, np.ones(len(grads)), grads, step)


def test_nash_orthogonal_by_hand():
    # alpha_t ||g_t||^2 alpha_t = 1: alpha = (1/2, 1), d = (1, 1).
    grads = np.array([[2.0, 0.0], [0.0, 1.0]])
    out = _nash(grads, nash_max_norm=0.0)
    np.testing.assert_allclose(out.weights, [0.5, 1.0], rtol=1e-5)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)
    np.testing.assert_array_equal(out.head_weights, out.weights)
    np.testing.assert_array_equal(out.state["alpha"], out.weights)
    clipped = _nash(grads)  # max_norm 1: d * 1 / (sqrt 2 + 1e-6).
    np.testing.assert_allclose(clipped.update, [1, 1] / (np.sqrt(2) + 1e-6), 1e-5)
    np.testing.assert_allclose(clipped.weights, [0.5, 1.0], rtol=1e-5)


@pytest.mark.parametrize("conflict", [False, True])
def test_nash_matches_reference_with_tiny_residual(conflict):
    for _, grads, _ in _draws(9, conflict):
        gram = grads @ grads.T
        out = _nash(grads, nash_max_norm=0.0)
        alpha = np.asarray(out.weights, float)
        # Measured: <= 1e-5 on 600 draws (see nash_mtl's docstring).
        assert np.abs(alpha * (gram @ alpha) - 1).max() < 1e-4
        np.testing.assert_allclose(alpha, nash_ref(gram), rtol=1e-4)
        np.testing.assert_allclose(out.update, alpha @ grads, rtol=1e-4, atol=1e-5)


def test_nash_falls_back_when_the_budget_is_too_small():
    # (For T = 2 the rescaled 1/||g_t|| start is already exact.)
    gram = jnp.array([[1.0, 0.9, -0.2], [0.9, 4.0, 0.5], [-0.2, 0.5, 0.3]])
    prev = jnp.array([0.3, 0.6, 2.0])
    alpha, ok = nash_mtl.nash_solve(gram, prev, iterations=0)
    assert not ok
    np.testing.assert_array_equal(alpha, prev)
    alpha, ok = nash_mtl.nash_solve(gram, prev, iterations=20)
    assert ok
    np.testing.assert_allclose(alpha, nash_ref(np.asarray(gram, float)), rtol=1e-5)


def test_nash_solution_does_not_depend_on_the_warm_start():
    _, grads, _ = list(_draws(10))[2]
    cold = _nash(grads)
    warm = _nash(grads, state={"alpha": jnp.array([5.0, 0.01, 2.0, 1.0, 30.0])})
    np.testing.assert_allclose(warm.weights, cold.weights, rtol=1e-4)


def test_nash_update_every_reuses_previous_alpha():
    grads = np.array([[2.0, 0.0], [0.0, 1.0]])
    prev = {"alpha": jnp.array([3.0, 7.0])}
    kept = _nash(grads, prev, step=3, nash_update_every=2, nash_max_norm=0.0)
    np.testing.assert_array_equal(kept.weights, [3.0, 7.0])
    np.testing.assert_array_equal(kept.state["alpha"], [3.0, 7.0])
    np.testing.assert_allclose(kept.update, [6.0, 7.0])
    solved = _nash(grads, prev, step=4, nash_update_every=2, nash_max_norm=0.0)
    np.testing.assert_allclose(solved.weights, [0.5, 1.0], rtol=1e-5)


def test_nash_clips_the_update_only():
    grads = np.array([[30.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    out = _nash(grads, nash_max_norm=0.5)
    raw = np.asarray(out.weights, float) @ grads
    np.testing.assert_allclose(
        out.update, raw * 0.5 / (np.linalg.norm(raw) + 1e-6), rtol=1e-5
    )
    np.testing.assert_allclose(out.weights, [1 / 30, 10.0], rtol=1e-5)
    small = np.array([[0.1, 0.0], [0.0, 0.2]])
    out = _nash(small, nash_max_norm=1e3)  # Far below the cap: untouched.
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)


def test_nash_identical_gradients():
    # alpha_i ||g||^2 (alpha_1 + alpha_2) = 1: alpha = 1 / (||g|| sqrt 2).
    g = np.array([1.0, 2.0, -2.0])
    out = _nash(np.stack([g, g]), nash_max_norm=0.0)
    np.testing.assert_allclose(out.weights, [1 / (3 * np.sqrt(2))] * 2, rtol=1e-5)


def test_nash_opposite_gradients_fall_back_to_previous_alpha():
    # No alpha > 0 solves it (K is singular and conflicting): keep alpha_prev.
    g = np.array([1.0, -2.0, 0.5])
    prev = jnp.array([0.3, 0.6])
    out = _nash(np.stack([g, -g]), {"alpha": prev})
    np.testing.assert_array_equal(out.weights, prev)
    out = _nash(np.stack([g, -g]), nash_max_norm=0.0)
    np.testing.assert_array_equal(out.weights, [1.0, 1.0])
    np.testing.assert_allclose(out.update, [0, 0, 0], atol=1e-6)


def test_nash_zero_gradient_stays_finite():
    grads = np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    out = _nash(grads, {"alpha": jnp.array([1.0, 0.7, 1.0])}, nash_max_norm=0.0)
    # Tasks 0 and 2 are orthogonal: 1/||g||; task 1 keeps its previous weight.
    np.testing.assert_allclose(out.weights, [1 / 3, 0.7, 2.0], rtol=1e-5)
    np.testing.assert_allclose(out.update, [1.0, 1.0], rtol=1e-5)
    out = _nash(np.zeros((2, 3)))
    np.testing.assert_array_equal(out.weights, [1, 1])
    np.testing.assert_array_equal(out.update, [0, 0, 0])


# ---------------------------------------------------------------- DB-MTL


def _db(beta=0.9, sigma=0.0):
    return _build(db_mtl.make_db_mtl, db_beta=beta, db_beta_sigma=sigma)


def test_db_first_call_and_equal_scaled_norms():
    method = _db()
    _, state = method.init(2, num_params=3)
    grads = np.array([[1.0, 0.0, 2.0], [0.0, -4.0, 0.0]])
    losses = np.array([0.5, 2.0])
    out = _call(method, {}, state, losses, grads)
    h = grads / (losses[:, None] + 1e-8)
    np.testing.assert_allclose(out.state["buffer"], 0.1 * h, rtol=1e-5)
    assert int(out.state["count"]) == 1
    # ||B|| = 0.1 (sqrt 20, 2): task 2 is scaled up to task 1's norm.
    np.testing.assert_allclose(out.weights, [1.0, np.sqrt(20) / 2], rtol=1e-5)
    scaled = np.asarray(out.weights)[:, None] * np.asarray(out.state["buffer"])
    norms = np.linalg.norm(scaled, axis=1)
    np.testing.assert_allclose(norms, norms.max(), rtol=1e-5)
    np.testing.assert_allclose(out.head_weights, 1 / (losses + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_db_matches_reference_over_steps(sigma):
    method = _db(beta=0.9, sigma=sigma)
    for num_tasks, grads, losses in _draws(11, conflict=True):
        rng = np.random.default_rng(num_tasks)
        grads_seq = [grads + rng.normal(0, 0.5, grads.shape) for _ in range(4)]
        grads_seq = [g.astype(np.float32).astype(float) for g in grads_seq]
        losses_seq = [losses * rng.uniform(0.5, 1.5, num_tasks) for _ in range(4)]
        losses_seq = [x.astype(np.float32).astype(float) for x in losses_seq]
        _, state = method.init(num_tasks, num_params=grads.shape[1])
        for step, (ls, gs) in enumerate(zip(losses_seq, grads_seq, strict=True)):
            out = _call(method, {}, state, ls, gs, step)
            state = out.state
        scales, update, buf = db_ref(losses_seq, grads_seq, 0.9, sigma)
        np.testing.assert_allclose(out.state["buffer"], buf, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.weights, scales, rtol=1e-4)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-4)


def test_db_degenerate_gradients_stay_finite():
    method = _db()
    _, state = method.init(2, num_params=3)
    g = np.array([1.0, 2.0, -2.0])
    out = _call(method, {}, state, [1.0, 1.0], np.stack([g, g]))
    np.testing.assert_allclose(out.weights, [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out.update, 0.2 * g, rtol=1e-5)
    out = _call(method, {}, state, [1.0, 0.0], np.stack([g, 0 * g]))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
    np.testing.assert_allclose(out.update, 0.1 * g, rtol=1e-5)


def test_db_init_needs_the_parameter_count():
    with pytest.raises(ValueError, match="num_params"):
        _db().init(2)


# ---------------------------------------------------------------- all methods

BUILDERS = {
    **gradnorm.BUILDERS,
    **imtl.BUILDERS,
    **aligned_mtl.BUILDERS,
    **nash_mtl.BUILDERS,
    **db_mtl.BUILDERS,
}


def test_builders_and_flags():
    assert set(BUILDERS) == {"gradnorm", "imtl", "aligned_mtl", "nash_mtl", "db_mtl"}
    rep_ok = {name: b(_cfg(), (), 1).rep_grad_ok for name, b in BUILDERS.items()}
    assert rep_ok == {
        "gradnorm": True,
        "imtl": True,
        "aligned_mtl": True,
        "nash_mtl": False,
        "db_mtl": False,
    }
    assert all(b(_cfg(), (), 1).needs_grads for b in BUILDERS.values())


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_runs_under_jit_with_stable_state(name):
    num_tasks, num_params = 3, 7
    cfg = _cfg(nash_update_every=2)
    method = BUILDERS[name](cfg, (), 2)
    params, state = _init(method, num_tasks, num_params)
    fn = jax.jit(method.aggregate)
    rng = np.random.default_rng(0)
    sig_params, sig_state = _tree_sig(params), _tree_sig(state)
    for step in range(5):  # Crosses GradNorm's epoch 0 and Nash's reuse steps.
        grads = jnp.asarray(rng.normal(size=(num_tasks, num_params)), jnp.float32)
        losses = jnp.asarray(rng.uniform(0.5, 2, num_tasks), jnp.float32)
        out = fn(params, state, losses, grads, step=jnp.int32(step), rng=RNG)
        assert _tree_sig(out.state) == sig_state
        assert _tree_sig(out.param_grads) == sig_params
        for field in ("weights", "head_weights", "rep_coeffs"):
            assert getattr(out, field).shape == (num_tasks,)
        assert out.update.shape == (num_params,)
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
        state = out.state
        params = jax.tree.map(lambda p, g: p - 1e-2 * g, params, out.param_grads)
