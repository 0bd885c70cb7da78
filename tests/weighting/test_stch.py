"""STCH against a float64 NumPy transcription of MTL_METHODS.md, by hand, and
its guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mtl_ser.weighting import stch


def _build(steps_per_epoch=2, **overrides):
    cfg = default.get_config().weighting
    cfg.name = "stch"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return stch.make_stch(cfg, (), steps_per_epoch)


def _reference(step_losses, steps_per_epoch, mu, warmup):
    """Per-step (d total / d L) from LibMTL's rule, float64, loops."""
    out, total_sum, count, nadir = [], 0.0, 0, None
    for s, losses in enumerate(np.asarray(step_losses, np.float64)):
        epoch = s // steps_per_epoch
        if epoch <= warmup:
            out.append(1.0 / (losses + 1e-20))
            if epoch == warmup:
                total_sum, count = total_sum + losses, count + 1
            continue
        if nadir is None:
            nadir = total_sum / count
        x = np.log(losses / nadir + 1e-20)
        soft = np.exp((x - x.max()) / mu)
        soft /= soft.sum()
        num_tasks = len(losses)
        out.append(num_tasks * soft / (nadir * (losses / nadir + 1e-20)))
    return np.array(out)


def _run(method, step_losses):
    params, state = method.init(np.shape(step_losses)[1])
    combine = jax.jit(method.combine)
    weights, totals = [], []
    for i, losses in enumerate(step_losses):
        losses = jnp.asarray(losses, jnp.float32)
        total, w, state = combine(params, state, losses, step=jnp.int32(i))
        weights.append(np.asarray(w))
        totals.append(float(total))
    return np.array(weights), np.array(totals), state


@pytest.mark.parametrize("mu", [1.0, 0.3])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_matches_reference_over_epochs(mu, num_tasks):
    steps_per_epoch, warmup = 3, 1
    rng = np.random.default_rng(num_tasks)
    step_losses = rng.uniform(0.1, 3.0, (4 * steps_per_epoch, num_tasks))
    step_losses = step_losses.astype(np.float32)
    method = _build(steps_per_epoch, stch_mu=mu, stch_warmup_epochs=warmup)
    weights, _, state = _run(method, step_losses)
    expected = _reference(step_losses, steps_per_epoch, mu, warmup)
    np.testing.assert_allclose(weights, expected, rtol=2e-5)
    # The nadir is the warm-up epoch's mean (steps 3-5) and stays so.
    nadir = step_losses[3:6].astype(np.float64).mean(0)
    np.testing.assert_allclose(stch.nadir(state), nadir, rtol=1e-6)


def test_by_hand_after_the_warmup():
    # Nadir (1, 2); losses (2, 2): x = (log 2, 0), mu = 1, so the weights are
    # 2 softmax(x)_t / L_t = 2 (2/3, 1/3) / 2 = (2/3, 1/3).
    method = _build(1, stch_mu=1.0, stch_warmup_epochs=0)
    params, state = method.init(2)
    _, w, state = method.combine(params, state, jnp.array([1.0, 2.0]), step=0)
    np.testing.assert_allclose(w, [1.0, 0.5], rtol=1e-6)  # 1 / L in warm-up.
    total, w, _ = method.combine(params, state, jnp.array([2.0, 2.0]), step=1)
    np.testing.assert_allclose(w, [2 / 3, 1 / 3], rtol=1e-6)
    # The value: T mu log sum exp(x - max x) = 2 log(1 + 1/2).
    np.testing.assert_allclose(total, 2 * np.log(1.5), rtol=1e-6)


def test_small_mu_approaches_the_tchebycheff_maximum():
    method = _build(1, stch_mu=1e-3, stch_warmup_epochs=0)
    params, state = method.init(3)
    _, _, state = method.combine(params, state, jnp.ones(3), step=0)
    losses = jnp.array([1.5, 3.0, 2.0])  # Task 1 is furthest above its nadir.
    _, w, _ = method.combine(params, state, losses, step=1)
    np.testing.assert_allclose(w, [0.0, 3 / 3.0, 0.0], atol=1e-6)


def test_zero_and_negative_losses_and_a_zero_nadir_stay_finite():
    method = _build(1, stch_warmup_epochs=0)
    params, state = method.init(3)
    first = jnp.array([0.0, -1e-7, 1.0])  # No labels; rounding of 1 - CCC.
    total, w, state = method.combine(params, state, first, step=0)
    assert np.isfinite(float(total)) and np.all(np.isfinite(w))
    assert float(w[1]) == 0.0
    np.testing.assert_allclose(stch.nadir(state), [0.0, 0.0, 1.0])
    total, w, _ = method.combine(params, state, jnp.array([1.0, 1.0, 2.0]), step=1)
    assert np.isfinite(float(total))
    # Tasks with a zero nadir are left out; the third takes all the weight.
    np.testing.assert_allclose(w, [0.0, 0.0, 3 / 2.0], rtol=1e-6)


@pytest.mark.parametrize("field, value", [("stch_mu", 0.0), ("stch_warmup_epochs", -1)])
def test_bad_fields_are_named(field, value):
    with pytest.raises(ValueError, match=f"weighting.{field}"):
        _build(**{field: value})
