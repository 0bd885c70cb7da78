"""GradVac against a float64 NumPy transcription of MTL_METHODS.md (direct
slices, loops), by hand, its defining property and its three groupings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import gradvac

RNG = jax.random.PRNGKey(3)
# Three "modules": conv (kernel 4, bias 2), norm (scale 1, bias 1), dense (3).
LAYOUT = (
    (("trunk", "conv"), 4),
    (("trunk", "conv"), 2),
    (("trunk", "norm"), 1),
    (("trunk", "norm"), 1),
    (("trunk", "dense"), 3),
)
# The same with every tensor wider than the number of tasks: no group whose
# projected gradient can vanish, so rounding cannot decide the cosines.
WIDE = tuple((module, size + 6) for module, size in LAYOUT)


def _build(**overrides):
    cfg = default.get_config().weighting
    cfg.name = "gradvac"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return gradvac.make_gradvac(cfg, (), 1)


def _reference(grads, rho_hat, orders, sizes, beta):
    """One LibMTL step, float64: (d, new rho_hat)."""
    grads, rho_hat = np.asarray(grads, np.float64), np.array(rho_hat, np.float64)
    bounds = np.cumsum((0,) + tuple(sizes))
    pc = grads.copy()
    for i in range(len(grads)):
        for j in orders[i]:
            for k in range(len(sizes)):
                s = slice(bounds[k], bounds[k + 1])
                pn, gn = np.linalg.norm(pc[i, s]), np.linalg.norm(grads[j, s])
                rho = pc[i, s] @ grads[j, s] / (pn * gn + 1e-8)
                target = rho_hat[i, j, k]
                if rho < target:
                    w = pn * (
                        target * np.sqrt(1 - rho**2) - rho * np.sqrt(1 - target**2)
                    )
                    pc[i, s] += grads[j, s] * w / (gn * np.sqrt(1 - target**2) + 1e-8)
                rho_hat[i, j, k] = (1 - beta) * target + beta * rho
    return pc.sum(0), rho_hat


def _call(method, state, grads, rng=RNG, layout=LAYOUT):
    num_tasks = len(grads)
    return method.aggregate(
        {},
        state,
        jnp.ones((num_tasks,), jnp.float32),
        jnp.asarray(grads, jnp.float32),
        step=jnp.int32(0),
        rng=rng,
        layout=layout,
    )


def test_group_sizes_of_the_three_types():
    assert gradvac.group_sizes(LAYOUT, 0) == (11,)
    assert gradvac.group_sizes(LAYOUT, 1) == (6, 2, 3)
    assert gradvac.group_sizes(LAYOUT, 2) == (4, 2, 1, 1, 3)


def test_first_step_by_hand_is_pcgrad_like():
    # rho_hat = 0: a negative cosine is lifted to 0, i.e. projected off.
    layout = ((("m",), 2),)
    method = _build()
    _, state = method.init(2, layout=layout)
    out = _call(method, state, [[1.0, 0.0], [-1.0, 1.0]], layout=layout)
    # pc_1 = g_1 + g_2 / 2 = (1/2, 1/2); pc_2 = g_2 + g_1 = (0, 1).
    np.testing.assert_allclose(out.update, [0.5, 1.5], rtol=1e-6)
    rho = -1 / np.sqrt(2)
    np.testing.assert_allclose(
        out.state["rho_hat"][:, :, 0], [[0, rho / 2], [rho / 2, 0]], rtol=1e-6
    )
    np.testing.assert_allclose(out.weights, [1.0, 1.0])


def test_adjusted_gradient_reaches_the_target_cosine():
    layout = ((("m",), 6),)
    method = _build()
    _, state = method.init(2, layout=layout)
    state = {"rho_hat": jnp.full((2, 2, 1), 0.6)}
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(2, 6))
    grads[1] -= 1.5 * grads[0]  # cos < 0.6 both ways.
    out = _call(method, state, grads, layout=layout)
    pc_sum = np.asarray(out.update, np.float64)
    # With T = 2, pc_1 = g_1 + a g_2 and pc_2 = g_2 + b g_1; recover both from
    # the reference, which is checked against this update elsewhere.
    d, _ = _reference(grads, state["rho_hat"], [[1], [0]], (6,), 0.5)
    np.testing.assert_allclose(pc_sum, d, rtol=1e-4)
    pc = grads.astype(np.float64).copy()
    for i, j in ((0, 1), (1, 0)):
        n_i, n_j = np.linalg.norm(pc[i]), np.linalg.norm(grads[j])
        rho = pc[i] @ grads[j] / (n_i * n_j)
        pc[i] += grads[j] * n_i * (0.6 * np.sqrt(1 - rho**2) - rho * 0.8) / (n_j * 0.8)
        cos = pc[i] @ grads[j] / (np.linalg.norm(pc[i]) * n_j)
        np.testing.assert_allclose(cos, 0.6, rtol=1e-9)


@pytest.mark.parametrize("group_type", [0, 1, 2])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_over_steps(group_type, num_tasks):
    method = _build(gradvac_group_type=group_type, gradvac_beta=0.5)
    _, state = method.init(num_tasks, layout=WIDE)
    sizes = gradvac.group_sizes(WIDE, group_type)
    rho_hat = np.zeros((num_tasks, num_tasks, len(sizes)))
    rng = np.random.default_rng(num_tasks + 10 * group_type)
    base = rng.normal(size=sum(sizes))
    for step in range(3):
        grads = (
            rng.normal(size=(num_tasks, sum(sizes)))
            + 0.7 * base * np.where(np.arange(num_tasks) % 2, -1, 1)[:, None]
        )
        grads = grads.astype(np.float32).astype(np.float64)
        key = jax.random.fold_in(RNG, step)
        out = _call(method, state, grads, rng=key, layout=WIDE)
        orders = np.asarray(gradvac.other_task_orders(key, num_tasks))
        d, rho_hat = _reference(grads, rho_hat, orders, sizes, 0.5)
        np.testing.assert_allclose(out.update, d, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(out.state["rho_hat"], rho_hat, atol=2e-4)
        state = out.state


def test_orders_are_permutations_of_the_other_tasks():
    orders = np.asarray(gradvac.other_task_orders(RNG, 5))
    for i, row in enumerate(orders):
        assert sorted(row.tolist()) == [j for j in range(5) if j != i]


def test_runs_jitted_with_stable_state_and_degenerate_gradients_stay_finite():
    method = _build(gradvac_group_type=2)  # With 1-element groups.
    _, state = method.init(3, layout=LAYOUT)
    fn = jax.jit(method.aggregate, static_argnames="layout")
    g = np.arange(11.0) - 5
    rng = np.random.default_rng(0)
    draws = [np.stack([g, -g, 0 * g]), np.stack([g, g, g]), np.ones((3, 11))]
    draws += [rng.normal(size=(3, 11)) for _ in range(4)]
    for grads in draws:
        out = fn({}, state, jnp.ones(3), jnp.asarray(grads, jnp.float32),
                 step=jnp.int32(0), rng=RNG, layout=LAYOUT)  # fmt: skip
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
        assert out.state["rho_hat"].shape == state["rho_hat"].shape
        assert np.all(np.abs(out.state["rho_hat"]) <= 1.0)
        state = out.state


def test_init_needs_the_layout_and_bad_fields_are_named():
    with pytest.raises(ValueError, match="layout"):
        _build().init(2)
    with pytest.raises(ValueError, match="weighting.gradvac_group_type"):
        _build(gradvac_group_type=3)
    with pytest.raises(ValueError, match="weighting.gradvac_beta"):
        _build(gradvac_beta=1.5)
