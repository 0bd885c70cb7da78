"""Loss-based weighting: scalarise the task losses; the step differentiates once.

Methods: equal, fixed, uncertainty (two forms), DWA, RLW, GLS and FAMO. Every
`combine` returns the EFFECTIVE weights d total / d losses[t] (stop-gradient),
which is what the train step logs. For GLS these differ from the vector
LibMTL's `backward()` returns (see `gls_combine`); FAMO's returns None there.

Uncertainty weighting (Kendall, Gal, Cipolla 2018) learns s_t = log sigma_t^2 per
task. LibMTL, the reference implementation, uses one form for every task,
L/(2 e^s) + s/2 with s initialised to -0.5; that is our default ("libmtl").
The paper's form ("kendall") drops the 1/2 for classification: e^-s L + s/2.
The revised regulariser of Liebel & Koerner 2018 replaces s/2 with
log(1 + e^s) = log(1 + sigma^2), which stays positive so the weights cannot run
to infinity by making the regulariser negative.

DWA, RLW, GLS and FAMO follow LibMTL (see /work/shared/reference/MTL_METHODS.md)
except for guards where LibMTL would produce NaN or inf; each is documented on
its function. A task loss can be exactly 0 here (a batch with no label for the
task gives a masked mean of 0), so the guards matter.
"""

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting import history as history_lib
from mtl_ser.weighting.base import Method, no_params


def equal_combine(params, state, losses, *, step=None, rng=None):
    """Sum of the task losses (weight 1 each, as LibMTL's EW)."""
    del params, step, rng
    return losses.sum(), jnp.ones_like(losses), state


def fixed_combine(params, state, losses, *, weights, step=None, rng=None):
    """Sum of the task losses with user-given constant weights."""
    del params, step, rng
    w = jnp.asarray(weights, losses.dtype)
    return (w * losses).sum(), w, state


def uncertainty_combine(params, state, losses, *, half, revised, step=None, rng=None):
    """Uncertainty-weighted total: sum_t c_t e^{-s_t} L_t + reg(s_t).

    Args:
      params: {"log_var": [T]} learnable s = log sigma^2.
      state: unused (carried through).
      losses: [T] task losses.
      half: [T] bool-like; 1 where the factor c_t is 1/2, 0 where it is 1.
      revised: use log(1 + e^s) (Liebel & Koerner) instead of s/2 as regulariser.

    Returns:
      (total, effective weights c_t e^{-s_t}, state).
    """
    del step, rng
    s = params["log_var"]
    factor = jnp.where(jnp.asarray(half), 0.5, 1.0)
    weights = factor * jnp.exp(-s)
    reg = jax.nn.softplus(s) if revised else 0.5 * s
    total = (weights * losses + reg).sum()
    return total, jax.lax.stop_gradient(weights), state


def dwa_combine(params, state, losses, *, steps_per_epoch, temperature, step, rng=None):
    """Dynamic weight average (Liu, Johns, Davison 2019), as LibMTL's DWA.

    Epoch e = step // steps_per_epoch uses w = 1 while fewer than two epochs
    have finished (epochs 0 and 1), else w = T * softmax(r / temperature) with
    r_t = mean L_t(e-1) / mean L_t(e-2). The weights are constant within an
    epoch; the step's losses only enter the running epoch mean.

    Guard (LibMTL gives inf/NaN): a task whose epoch e-2 mean is 0 gets r_t = 1,
    and r is capped at the largest float32 so the softmax stays finite.

    Args:
      params: unused ({}).
      state: {"history": history.init(T, keep=2)}.
      losses: [T] task losses.
      steps_per_epoch, temperature: bound at build time.
      step: int32 scalar, completed optimizer steps.

    Returns:
      (sum_t w_t L_t, w [T], new state).
    """
    del params, rng
    history = history_lib.start_step(state["history"], step, steps_per_epoch)
    prev, prev2 = history["recent"][0], history["recent"][1]  # Epochs e-1, e-2.
    ratio = jnp.where(prev2 > 0, prev / jnp.where(prev2 > 0, prev2, 1.0), 1.0)
    ratio = jnp.minimum(ratio, jnp.finfo(jnp.float32).max)
    dynamic = losses.shape[0] * jax.nn.softmax(ratio / temperature)
    weights = jnp.where(history["finished"] >= 2, dynamic, jnp.ones_like(dynamic))
    weights = jax.lax.stop_gradient(weights.astype(losses.dtype))
    history = history_lib.add(history, jax.lax.stop_gradient(losses))
    return (weights * losses).sum(), weights, {"history": history}


# Folded into the step key so RLW's draw is independent of the dropout masks
# drawn from the same key.
_RLW_STREAM = 0x524C57


def rlw_combine(params, state, losses, *, step=None, rng):
    """Random loss weighting (Lin et al. 2021), as LibMTL's RLW.

    w = softmax(z), z ~ N(0, I_T), a fresh draw every step: the weights lie on
    the simplex (so the total is on 1/T of EW's scale). The draw depends only on
    `rng`; the train step passes a per-step key, fold_in(state.rng, state.step),
    so steps differ. We fold a fixed tag into it first, so the draw does not
    reuse the key the step also gives dropout. LibMTL draws from torch's global
    RNG; only the distribution can match.

    Returns:
      (sum_t w_t L_t, w [T], state).
    """
    del params, step
    z = jax.random.normal(jax.random.fold_in(rng, _RLW_STREAM), losses.shape)
    weights = jax.nn.softmax(z.astype(losses.dtype))
    return (weights * losses).sum(), weights, state


# Losses at or below this floor are held at it (GLS's guard; see gls_combine).
_GLS_FLOOR = 1e-8


def gls_combine(params, state, losses, *, step=None, rng=None):
    """Geometric loss strategy (Chennupati et al. 2019), as LibMTL's GLS.

    total = (prod_t L_t)^(1/T), computed as exp(mean_t log L_t) so the product
    cannot under- or overflow. The effective weights are
    d total / d L_t = total / (T L_t). LibMTL returns L_t / (T prod L) instead,
    which is not the effective weighting; we log the effective one.

    Guard (LibMTL has no epsilon, and a zero loss makes every gradient inf or
    NaN): a loss <= 1e-8 is replaced by 1e-8 with zero gradient, so that task
    gets weight 0 (a zero loss, e.g. a batch without its labels, has nothing to
    learn) and the others stay finite. Losses above 1e-8 are untouched.

    Returns:
      (total, effective weights [T], state).
    """
    del params, step, rng
    active = losses > _GLS_FLOOR
    held = jnp.where(active, losses, _GLS_FLOOR)
    total = jnp.exp(jnp.log(held).mean())
    weights = jnp.where(active, total / (losses.shape[0] * held), 0.0)
    return total, jax.lax.stop_gradient(weights), state


# FAMO's epsilon inside the log (LibMTL's 1e-8).
_FAMO_EPS = 1e-8


def _famo_shifted(losses):
    """D = L - m + 1e-8 with LibMTL's min_losses m = 0 (never updated).

    Guard: a negative loss (float rounding of e.g. 1 - CCC) is read as 0, so
    the log stays finite; LibMTL would give NaN. Non-negative losses are
    untouched.
    """
    return jnp.where(losses >= 0, losses, 0.0) + _FAMO_EPS


def famo_combine(params, state, losses, *, step=None, rng=None):
    """Fast adaptive multitask optimisation (Liu et al. 2023), LibMTL's FAMO.

    z = softmax(xi), D_t = L_t + 1e-8, c = sum_t z_t / D_t (constant);
    total = sum_t z_t log D_t / c, so the effective weights z_t / (c D_t) sum to
    1. xi only changes in `famo_after_step`. LibMTL returns None as weights.

    Args:
      params: unused ({}).
      state: famo_init's state; "logits" holds xi.
      losses: [T].

    Returns:
      (total, effective weights [T], state unchanged).
    """
    del params, step, rng
    z = jax.nn.softmax(state["logits"]).astype(losses.dtype)
    shifted = _famo_shifted(losses)
    c = jax.lax.stop_gradient((z / shifted).sum())
    total = (z * jnp.log(shifted)).sum() / c
    weights = jnp.where(losses >= 0, z / (c * shifted), 0.0)
    return total, jax.lax.stop_gradient(weights), state


def famo_after_step(
    params, state, losses_before, losses_after, *, lr, weight_decay, b1, b2, eps
):
    """One Adam step on FAMO's logits from the loss change of the last step.

    delta_t = log D_t(before) - log D_t(after); the logits' gradient is
    J_softmax(xi)^T delta = z * (delta - z . delta) plus the coupled L2 term
    weight_decay * xi, then one step of torch.optim.Adam (bias-corrected,
    eps added to sqrt(v_hat)).

    Args:
      params: unused ({}).
      state: {"logits", "mu", "nu": [T] float32, "count": int32 scalar}.
      losses_before: [T] the losses `combine` saw.
      losses_after: [T] the same batch's losses after the optimizer step.
      lr, weight_decay, b1, b2, eps: Adam settings, bound at build time.

    Returns:
      The new state (same structure, shapes and dtypes).
    """
    del params
    xi = state["logits"]
    before = jax.lax.stop_gradient(losses_before).astype(jnp.float32)
    after = jax.lax.stop_gradient(losses_after).astype(jnp.float32)
    delta = jnp.log(_famo_shifted(before)) - jnp.log(_famo_shifted(after))
    z = jax.nn.softmax(xi)
    grad = z * (delta - jnp.dot(z, delta)) + weight_decay * xi
    count = state["count"] + 1
    mu = b1 * state["mu"] + (1.0 - b1) * grad
    nu = b2 * state["nu"] + (1.0 - b2) * grad * grad
    # 1 - beta^t as -expm1(t log beta): accurate in float32 at small t, where
    # 1 - 0.999^t would lose most digits (torch computes it in float64).
    t = count.astype(jnp.float32)
    correction1 = -jnp.expm1(t * math.log(b1))
    correction2 = -jnp.expm1(t * math.log(b2))
    step_size = lr / correction1
    denom = jnp.sqrt(nu) / jnp.sqrt(correction2) + eps
    return {"logits": xi - step_size * mu / denom, "mu": mu, "nu": nu, "count": count}


def _log_var_params(num_tasks, init):
    return {"log_var": jnp.full((num_tasks,), init, jnp.float32)}, {}


def _history_state(num_tasks):
    return {}, {"history": history_lib.init(num_tasks, keep=2)}


def _famo_state(num_tasks):
    zeros = jnp.zeros((num_tasks,), jnp.float32)
    return {}, {
        "logits": zeros,  # xi, LibMTL's init 0.
        "mu": zeros,  # Adam first moment.
        "nu": zeros,  # Adam second moment.
        "count": jnp.zeros((), jnp.int32),  # Adam steps taken.
    }


def make_equal(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method("equal", no_params, equal_combine)


def make_fixed(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del steps_per_epoch
    weights = [float(w) for w in cfg.fixed_weights.split(",") if w.strip()]
    if len(weights) != len(tasks):
        raise ValueError(
            f"weighting.fixed_weights={cfg.fixed_weights!r}: needs one weight "
            f"per task ({len(tasks)}: {', '.join(t.name for t in tasks)})"
        )
    return Method("fixed", no_params, functools.partial(fixed_combine, weights=weights))


def _make_uncertainty(cfg, tasks: Sequence, *, revised: bool) -> Method:
    if cfg.uncertainty_form == "libmtl":
        half = tuple(True for _ in tasks)
    elif cfg.uncertainty_form == "kendall":
        half = tuple(t.kind == "regression" for t in tasks)
    else:
        raise ValueError(
            f"weighting.uncertainty_form={cfg.uncertainty_form!r}: "
            "choose 'libmtl' or 'kendall'"
        )
    combine = functools.partial(uncertainty_combine, half=half, revised=revised)
    init = functools.partial(_log_var_params, init=cfg.init_log_var)
    name = "uncertainty_revised" if revised else "uncertainty"
    return Method(name, init, combine)


def make_uncertainty(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del steps_per_epoch
    return _make_uncertainty(cfg, tasks, revised=False)


def make_uncertainty_revised(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del steps_per_epoch
    return _make_uncertainty(cfg, tasks, revised=True)


def make_dwa(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks
    combine = functools.partial(
        dwa_combine,
        steps_per_epoch=int(steps_per_epoch),
        temperature=float(cfg.dwa_temperature),
    )
    return Method("dwa", _history_state, combine)


def make_rlw(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method("rlw", no_params, rlw_combine)


def make_gls(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del cfg, tasks, steps_per_epoch
    return Method("gls", no_params, gls_combine)


def make_famo(cfg, tasks: Sequence, steps_per_epoch: int) -> Method:
    del tasks, steps_per_epoch
    after_step = functools.partial(
        famo_after_step,
        lr=float(cfg.famo_lr),
        weight_decay=float(cfg.famo_weight_decay),
        b1=0.9,
        b2=0.999,
        eps=1e-8,
    )
    return Method("famo", _famo_state, famo_combine, after_step=after_step)


# name -> builder(weighting config, tasks, steps_per_epoch) -> Method.
BUILDERS = {
    "equal": make_equal,
    "fixed": make_fixed,
    "uncertainty": make_uncertainty,
    "uncertainty_revised": make_uncertainty_revised,
    "dwa": make_dwa,
    "rlw": make_rlw,
    "gls": make_gls,
    "famo": make_famo,
}
