"""The train state: one pytree, born sharded."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mtl_ser import models
from mtl_ser.training import sharding


class TrainState(struct.PyTreeNode):
    """Everything that changes during training.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: {"model": Flax params, "weighting": the method's learnable params}.
      batch_stats: BatchNorm statistics ({} without BatchNorm).
      opt_state: optax state over `params`.
      weighting_state: the weighting method's non-learnable state.
      rng: uint32[2] root key; the step folds in `step` for its randomness.
      faults: non-finite steps (see `init_faults`).
      ema: exponential moving averages of the model's variables
        ({"params", and "batch_stats" with BatchNorm}; train.ema_decay), which
        evaluation uses instead of the live ones; None when not kept.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    weighting_state: Any
    rng: jax.Array
    faults: Any
    ema: Any


def init_faults(num_tasks: int) -> dict:
    """The record of non-finite steps, carried in the state.

    `skipped` counts the steps whose loss or gradient was not finite (never
    applied); `first_step` is the first of them (1-based, -1 if none), with its
    task losses and gradient norm.
    """
    return {
        "skipped": jnp.zeros((), jnp.int32),
        "first_step": jnp.full((), -1, jnp.int32),
        "first_losses": jnp.zeros((num_tasks,), jnp.float32),
        "first_grad_norm": jnp.zeros((), jnp.float32),
    }


def shared_layout(params) -> tuple:
    """((module path, size), ...) of the shared parameter tensors.

    In the order of the columns of the per-task gradient matrix [T, P] (the
    tree's flattening order); the module path is the tensor's path without
    its own name, e.g. ("trunk", "conv1") for ("trunk", "conv1", "kernel").
    """
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return tuple(
        (tuple(str(getattr(k, "key", k)) for k in path[:-1]), int(leaf.size))
        for path, leaf in leaves
        if not models.is_head_path(path)
    )


def _gradient_width(model, variables, x, rep_grad: bool) -> int:
    """P of a gradient method's [T, P]: shared parameters, or the embedding."""
    if rep_grad:
        _, embedding = model.apply(variables, x, train=False)
        return embedding.shape[-1]
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    return sum(x.size for path, x in leaves if not models.is_head_path(path))


def init_state(
    rng,
    *,
    model,
    method,
    tx,
    num_tasks: int,
    input_shape,
    rep_grad: bool = False,
    ema: bool = False,
) -> TrainState:
    """Initialises a TrainState (pure; jit it with output shardings).

    Args:
      rng: uint32[2] key.
      model: the MultiTaskModel.
      method: the weighting Method.
      tx: the optax optimizer.
      num_tasks: number of tasks.
      input_shape: a model input shape, e.g. [1, T, F, 1].
      rep_grad: whether a gradient method sees representation gradients.
      ema: whether to keep moving averages of the model's variables.
    """
    params_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros(input_shape, jnp.float32)
    variables = model.init(params_rng, x, train=False)
    extra = {}
    if method.init_needs_width:
        extra["num_params"] = _gradient_width(model, variables, x, rep_grad)
    if method.needs_layout:
        extra["layout"] = shared_layout(variables["params"])
    weighting_params, weighting_state = method.init(num_tasks, **extra)
    params = {"model": variables["params"], "weighting": weighting_params}
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        weighting_state=weighting_state,
        rng=state_rng,
        faults=init_faults(num_tasks),
        ema=model_variables(params["model"], batch_stats) if ema else None,
    )


def model_variables(params, batch_stats) -> dict:
    """Flax variables: {"params"}, with "batch_stats" when there are any."""
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def live_variables(state) -> dict:
    """The model's Flax variables as trained (not averaged)."""
    return model_variables(state.params["model"], state.batch_stats)


def eval_variables(state) -> dict:
    """The model's Flax variables for evaluation and analysis.

    The moving averages when the state keeps them (train.ema_decay > 0), else
    the live variables.
    """
    return live_variables(state) if state.ema is None else state.ema


def update_ema(ema, variables, step, decay: float):
    """One step of the moving averages of `variables` (None: not kept).

    The decay is warmed up as min(decay, (1 + step) / (10 + step)), so the early
    averages are not dominated by the initial weights.
    """
    if ema is None:
        return None
    step = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, v: d * e + (1.0 - d) * v, ema, variables)


def abstract_state(seed: int, mesh, init_fn) -> tuple[Any, Any]:
    """The state `init_fn(key)` would make, as shapes only: jax.ShapeDtypeStruct
    leaves carrying their (replicated) shardings, a target to restore a
    checkpoint into. Nothing is computed or allocated.

    Returns:
      (abstract state, state shardings pytree).
    """
    abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(seed))
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
    with_shardings = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract,
        shardings,
    )
    return with_shardings, shardings


def create_state(seed: int, mesh, init_fn) -> tuple[TrainState, Any]:
    """Creates the state `init_fn(key)` (init_state with its arguments bound)
    directly on the mesh, replicated; nothing is built on the host first.

    Returns:
      (state, state shardings pytree).
    """
    _, shardings = abstract_state(seed, mesh, init_fn)
    state = jax.jit(init_fn, out_shardings=shardings)(jax.random.PRNGKey(seed))
    return state, shardings


def param_count(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
