"""MoCo against a float64 NumPy transcription of MTL_METHODS.md and by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import moco


def _build(**overrides):
    cfg = default.get_config().weighting
    cfg.name = "moco"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return moco.make_moco(cfg, (), 1)


def _reference(losses_seq, grads_seq, beta, beta_sigma, gamma, gamma_sigma, rho):
    """LibMTL's rule with loops, float64: (lambda, update) per step."""
    num_tasks, num_params = grads_seq[0].shape
    y, lam, out = (
        np.zeros((num_tasks, num_params)),
        np.full(num_tasks, 1 / num_tasks),
        [],
    )
    for k, (losses, grads) in enumerate(zip(losses_seq, grads_seq, strict=True), 1):
        scaled = np.zeros_like(grads)
        for t in range(num_tasks):
            scaled[t] = grads[t] / (np.linalg.norm(grads[t]) + 1e-8) * losses[t]
        y = y - beta / k**beta_sigma * (y - scaled)
        step = lam - gamma / k**gamma_sigma * (y @ y.T + rho * np.eye(num_tasks)) @ lam
        lam = np.exp(step) / np.exp(step).sum()
        out.append((lam, y.T @ lam))
    return out


def _run(method, losses_seq, grads_seq):
    num_tasks, num_params = grads_seq[0].shape
    _, state = method.init(num_tasks, num_params=num_params)
    fn = jax.jit(method.aggregate)
    outs = []
    for step, (losses, grads) in enumerate(zip(losses_seq, grads_seq, strict=True)):
        out = fn(
            {},
            state,
            jnp.asarray(losses, jnp.float32),
            jnp.asarray(grads, jnp.float32),
            step=jnp.int32(step),
            rng=None,
        )
        state = out.state
        outs.append(out)
    return outs


FIELDS = ("beta", "beta_sigma", "gamma", "gamma_sigma", "rho")
HYPER = [  # LibMTL's defaults, and others.
    {f"moco_{k}": v for k, v in zip(FIELDS, (0.5, 0.5, 0.1, 0.5, 0.0), strict=True)},
    {f"moco_{k}": v for k, v in zip(FIELDS, (0.9, 0.0, 2.0, 1.0, 0.3), strict=True)},
]


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_over_steps(hyper, num_tasks):
    rng = np.random.default_rng(num_tasks)
    grads_seq = [
        (rng.normal(size=(num_tasks, 9)) * np.exp(rng.normal(0, 1, (num_tasks, 1))))
        .astype(np.float32)
        .astype(np.float64)
        for _ in range(5)
    ]
    losses_seq = [rng.uniform(0.2, 2.0, num_tasks).astype(np.float32) for _ in range(5)]
    outs = _run(_build(**hyper), losses_seq, grads_seq)
    ref = _reference(losses_seq, grads_seq, *(hyper[f"moco_{k}"] for k in FIELDS))
    for out, (lam, update) in zip(outs, ref, strict=True):
        np.testing.assert_allclose(out.weights, lam, rtol=1e-5)
        np.testing.assert_allclose(out.update, update, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.head_weights, np.ones(num_tasks))
    assert int(outs[-1].state["count"]) == 5


def test_first_step_by_hand():
    # Orthogonal g with norms 2 and 3, losses 1 and 4: H = diag-like rows
    # (1, 0), (0, 4); Y = H / 2 (beta 0.5, k = 1); Y Y^T = diag(1/4, 4);
    # lambda = softmax(1/2 - 0.1 (1/8, 2)).
    outs = _run(_build(), [[1.0, 4.0]], [np.array([[2.0, 0.0], [0.0, 3.0]])])
    np.testing.assert_allclose(outs[0].state["tracked"], [[0.5, 0], [0, 2]], rtol=1e-6)
    step = 0.5 - 0.1 * np.array([1 / 8, 2.0])
    lam = np.exp(step) / np.exp(step).sum()
    np.testing.assert_allclose(outs[0].weights, lam, rtol=1e-6)
    np.testing.assert_allclose(outs[0].update, [0.5 * lam[0], 2 * lam[1]], rtol=1e-6)


def test_tracked_gradients_have_the_loss_as_norm_and_zero_gradients_stay_finite():
    method = _build(moco_beta=1.0, moco_beta_sigma=0.0)  # Y = H at once.
    grads = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    outs = _run(method, [[2.0, 1.0]], [grads])
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(outs[0]))
    norms = np.linalg.norm(outs[0].state["tracked"], axis=1)
    np.testing.assert_allclose(norms, [2.0, 0.0], atol=1e-6)


def test_init_needs_the_parameter_count_and_bad_fields_are_named():
    with pytest.raises(ValueError, match="num_params"):
        _build().init(2)
    with pytest.raises(ValueError, match="weighting.moco_gamma"):
        _build(moco_gamma=-1.0)
