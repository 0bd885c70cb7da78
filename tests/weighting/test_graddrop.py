"""GradDrop against hand-computed cases and a NumPy transcription of LibMTL.

The reference below transcribes /work/shared/reference/MTL_METHODS.md (GradDrop:
per-sample R_t and X, float64, loops), not our jnp code.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mtl_ser.weighting import graddrop

KEY = jax.random.PRNGKey(0)


def _reference(per_sample, x, uniform, leak):
    """LibMTL's GradDrop: the representation's gradient [B, D] per sample.

    Args:
      per_sample: [T, B, D] R_t; x: [B, D] the representation; uniform: [D] U.
    """
    num_tasks, _, dim = per_sample.shape
    s = [np.sum(per_sample[t] * np.sign(x), axis=0) for t in range(num_tasks)]
    total = sum(s)
    total_abs = sum(np.abs(st) for st in s)
    p = 0.5 * (1.0 + total / (total_abs + 1e-7))
    out = np.zeros_like(per_sample[0])
    for t in range(num_tasks):
        mask = np.zeros(dim)
        for d in range(dim):
            mask[d] = float(p[d] > uniform[d] and s[t][d] > 0) + float(
                p[d] < uniform[d] and s[t][d] < 0
            )
        out += per_sample[t] * (leak + (1 - leak) * mask)
    return out


@pytest.mark.parametrize("leak", [0.0, 0.3])
def test_matches_the_reference_transcription(leak):
    rng = np.random.default_rng(0)
    per_sample = rng.normal(size=(3, 5, 16))
    x = rng.normal(size=(5, 16))
    uniform = rng.uniform(size=16)
    signed = (per_sample * np.sign(x)[None]).sum(1)  # What the step hands over.
    coeffs = leak + (1 - leak) * graddrop.keep_masks(
        jnp.asarray(signed, jnp.float32), jnp.asarray(uniform, jnp.float32)
    )
    ours = np.einsum("td,tbd->bd", np.asarray(coeffs, np.float64), per_sample)
    np.testing.assert_allclose(
        ours, _reference(per_sample, x, uniform, leak), rtol=1e-6, atol=1e-7
    )


def test_agreeing_tasks_are_all_kept():
    signed = jnp.array([[1.0, -2.0, 0.5], [3.0, -0.1, 2.0]])
    for u in (0.01, 0.5, 0.99):
        masks = graddrop.keep_masks(signed, jnp.full((3,), u))
        np.testing.assert_array_equal(masks, 1.0)


def test_exact_conflict_keeps_one_task_by_the_draw():
    signed = jnp.array([[2.0, -1.0], [-2.0, 1.0]])  # P = 1/2 for both features.
    np.testing.assert_allclose(graddrop.purity(signed), 0.5)
    low = graddrop.keep_masks(signed, jnp.array([0.2, 0.2]))  # U < P: sign +.
    high = graddrop.keep_masks(signed, jnp.array([0.8, 0.8]))  # U > P: sign -.
    np.testing.assert_array_equal(low, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(high, [[0, 1], [1, 0]])


def test_a_zero_gradient_task_is_dropped():
    signed = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    masks = graddrop.keep_masks(signed, jnp.array([0.5, 0.5]))
    np.testing.assert_array_equal(masks, [[0, 1], [1, 1]])


def test_positive_sign_is_kept_with_probability_purity():
    signed = jnp.array([[3.0], [-1.0]])  # P = (1 + 2/4) / 2 = 0.75.
    np.testing.assert_allclose(graddrop.purity(signed), [0.75], rtol=1e-6)
    cfg = ml_collections.ConfigDict({"graddrop_leak": 0.0})
    method = graddrop.make_graddrop(cfg, (), 1)
    params, state = method.init(2)
    losses = jnp.ones(2)

    def keep_first(key):
        out = method.aggregate(params, state, losses, signed, step=0, rng=key)
        return out.rep_coeffs[:, 0]

    kept = jax.vmap(keep_first)(jax.random.split(KEY, 4000))
    # Exactly one task survives each draw; task 0 with frequency 0.75.
    np.testing.assert_array_equal(kept.sum(1), 1.0)
    assert abs(float(kept[:, 0].mean()) - 0.75) < 0.03  # 4 sigma at n = 4000.


def test_leak_one_is_the_plain_sum_and_weights_are_ones():
    cfg = ml_collections.ConfigDict({"graddrop_leak": 1.0})
    method = graddrop.make_graddrop(cfg, (), 1)
    signed = jnp.array([[2.0, -1.0, 0.0], [-2.0, 1.0, 3.0]])
    out = method.aggregate({}, {}, jnp.array([0.7, 0.2]), signed, step=0, rng=KEY)
    np.testing.assert_array_equal(out.rep_coeffs, 1.0)
    np.testing.assert_array_equal(out.weights, 1.0)
    np.testing.assert_array_equal(out.head_weights, 1.0)
    assert method.rep_grad_only and method.signed_rep_grads


def test_leak_out_of_range_names_the_field():
    cfg = ml_collections.ConfigDict({"graddrop_leak": 1.5})
    with pytest.raises(ValueError, match="weighting.graddrop_leak"):
        graddrop.make_graddrop(cfg, (), 1)
