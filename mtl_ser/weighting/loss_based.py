"""Loss-based weighting: equal, fixed and uncertainty weighting (two forms).

Uncertainty weighting (Kendall, Gal, Cipolla 2018) learns s_t = log sigma_t^2 per
task. LibMTL, the reference implementation, uses one form for every task,
L/(2 e^s) + s/2 with s initialised to -0.5; that is our default ("libmtl").
The paper's form ("kendall") drops the 1/2 for classification: e^-s L + s/2.
The revised regulariser of Liebel & Koerner 2018 replaces s/2 with
log(1 + e^s) = log(1 + sigma^2), which stays positive so the weights cannot run
to infinity by making the regulariser negative.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_ser.weighting.base import Method

METHODS = ("equal", "fixed", "uncertainty", "uncertainty_revised")


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


def _no_params(num_tasks):
    del num_tasks
    return {}, {}


def _log_var_params(num_tasks, init):
    return {"log_var": jnp.full((num_tasks,), init, jnp.float32)}, {}


def make_method(cfg, tasks: Sequence) -> Method:
    """Builds the configured method.

    Args:
      cfg: the `weighting` sub-config.
      tasks: the task tuple (kinds choose the uncertainty factors).

    Returns:
      A Method.
    """
    name = cfg.name
    if name == "equal":
        return Method(name, _no_params, equal_combine)
    if name == "fixed":
        weights = [float(w) for w in cfg.fixed_weights.split(",") if w.strip()]
        if len(weights) != len(tasks):
            raise ValueError(
                f"weighting.fixed_weights={cfg.fixed_weights!r}: needs one weight "
                f"per task ({len(tasks)}: {', '.join(t.name for t in tasks)})"
            )
        return Method(
            name, _no_params, functools.partial(fixed_combine, weights=weights)
        )
    if name in ("uncertainty", "uncertainty_revised"):
        if cfg.uncertainty_form == "libmtl":
            half = tuple(True for _ in tasks)
        elif cfg.uncertainty_form == "kendall":
            half = tuple(t.kind == "regression" for t in tasks)
        else:
            raise ValueError(
                f"weighting.uncertainty_form={cfg.uncertainty_form!r}: "
                "choose 'libmtl' or 'kendall'"
            )
        combine = functools.partial(
            uncertainty_combine, half=half, revised=name == "uncertainty_revised"
        )
        init = functools.partial(_log_var_params, init=cfg.init_log_var)
        return Method(name, init, combine)
    raise ValueError(f"weighting.name={name!r}: unknown; choose one of {list(METHODS)}")
