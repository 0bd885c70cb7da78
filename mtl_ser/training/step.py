"""The jitted train and eval steps (pure, module level; bound with partial)."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import inputs as inputs_lib
from mtl_ser.training import grads as grads_lib
from mtl_ser.training import state as state_lib


def _inputs_rng(rng):
    """The key of the model input's noise and masks, independent of the dropout
    key `rng`."""
    return jax.random.fold_in(rng, 2)


def _guard(ok, new, old):
    """`new` where `ok` (a traced bool), else `old`, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _record_faults(faults, finite, step, losses, grad_norm):
    """Counts a non-finite step and keeps the details of the first one."""
    first = ~finite & (faults["first_step"] < 0)
    return {
        "skipped": faults["skipped"] + (~finite).astype(jnp.int32),
        "first_step": jnp.where(first, step + 1, faults["first_step"]),
        "first_losses": jnp.where(first, losses, faults["first_losses"]),
        "first_grad_norm": jnp.where(first, grad_norm, faults["first_grad_norm"]),
    }


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What a train step is made of; static, bound with functools.partial.

    Attributes:
      model, tasks, tx, method, schedule: the model, its tasks, the optax
        optimizer, the weighting Method and the learning-rate schedule.
      rep_grad: gradient methods: per-task gradients of the representation.
      per_task_grads: gradient methods: "vmap" (one batched backward pass over
        the T tasks) or "loop" (T backward passes in sequence, less memory).
      skip_nonfinite: a step whose losses or gradients are not all finite is
        never applied (the step counter still advances). If False, it also
        freezes every later step, so the state stays the last finite one until
        the loop stops the run; if True, later finite steps go on ("skip").
      inputs: the InputSpec that makes the model input [B, T, F, 1]; None
        only for batches that carry their "x".
      ema_decay: the decay of the state's moving averages of the model's
        variables, when it keeps them (state.ema).
    """

    model: Any
    tasks: tuple
    tx: Any
    method: Any
    schedule: Any
    rep_grad: bool = False
    per_task_grads: str = "vmap"
    skip_nonfinite: bool = False
    inputs: "inputs_lib.InputSpec | None" = None
    ema_decay: float = 0.0


def train_step(state, batch, store, *, spec: StepSpec):
    """One optimizer step on a (sharded) global batch.

    Loss-based methods differentiate their scalarised total once. Gradient-based
    methods (`method.needs_grads`) get the per-task gradients of the shared
    parameters (or, with `rep_grad`, of the shared representation) from one
    batched backward pass and return the update that replaces their sum.

    Args:
      state: TrainState.
      batch: a training batch (data/batches.py): "labels" and "masks" ({task:
        [B]}) and what the model input is made of (data/inputs.py), or "x".
      store: the training split's log-mels resident on the devices
        (data.device_cache), replicated; None otherwise.
      spec: the StepSpec.

    Returns:
      (new state, metrics dict of scalars named split/metric/task). For
      gradient methods, `train/loss/total` is sum_t weights[t] * L_t.
    """
    rng = jax.random.fold_in(state.rng, state.step)  # Dropout.
    x = inputs_lib.model_inputs(batch, store, _inputs_rng(rng), spec.inputs)
    batch = {"x": x, "labels": batch["labels"], "masks": batch["masks"]}
    total, grads, aux, stats = _gradients(spec, state, batch, rng)
    losses, weights, weighting_state, batch_stats = aux
    # One pass over the gradients gives the metric, the finiteness check and
    # the clipping norm (optim.clip_by_global_norm takes it as global_norm).
    model_sq = optax.tree.norm(grads["model"], squared=True)
    global_norm = jnp.sqrt(model_sq + optax.tree.norm(grads["weighting"], squared=True))
    finite = (
        jnp.all(jnp.isfinite(losses)) & jnp.isfinite(total) & jnp.isfinite(global_norm)
    )
    ok = finite if spec.skip_nonfinite else finite & (state.faults["first_step"] < 0)
    params, opt_state = _apply_if(ok, spec.tx, grads, state, global_norm)
    if spec.method.after_step is not None:
        weighting_state = _after_step(
            spec, state, params, batch, rng, weighting_state, losses
        )
    grad_norm = jnp.sqrt(model_sq)
    new_state = _next_state(
        state, ok, finite, params, opt_state, batch_stats, weighting_state,
        losses, grad_norm, spec.ema_decay,
    )  # fmt: skip
    metrics = {
        "train/loss/total": total,
        "train/grad_norm": grad_norm,
        "train/lr": spec.schedule(state.step),
        "train/skipped_steps": new_state.faults["skipped"],
        **stats,
    }
    for i, task in enumerate(spec.tasks):
        metrics[f"train/loss/{task.name}"] = losses[i]
        metrics[f"train/weight/{task.name}"] = weights[i]
    return new_state, metrics


def _gradients(spec: StepSpec, state, batch, rng):
    """(total, grads, (losses, weights, weighting state, batch_stats), extra
    metrics) of the batch, the way the weighting method asks for them."""
    kwargs = dict(model=spec.model, tasks=spec.tasks, method=spec.method)
    if not spec.method.needs_grads:
        return grads_lib.loss_based_grads(state, batch, rng, **kwargs)
    grad_fn = grads_lib.rep_grads if spec.rep_grad else grads_lib.param_grads
    return grad_fn(state, batch, rng, per_task_grads=spec.per_task_grads, **kwargs)


def _next_state(
    state, ok, finite, params, opt_state, batch_stats, weighting_state, losses,
    grad_norm, ema_decay,
):  # fmt: skip
    """The state after the step: its updates kept only where `ok`."""
    batch_stats, weighting_state = _guard(
        ok, (batch_stats, weighting_state), (state.batch_stats, state.weighting_state)
    )
    return state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        weighting_state=weighting_state,
        faults=_record_faults(state.faults, finite, state.step, losses, grad_norm),
        ema=state_lib.update_ema(
            state.ema,
            state_lib.model_variables(params["model"], batch_stats),
            state.step,
            ema_decay,
        ),
    )


def _apply_if(ok, tx, grads, state, global_norm):
    """(params, opt_state) after the optimizer's update when `ok`, else as they are.

    A branch, not a select: the optimizer runs only on finite steps, and the
    (donated) params and moments are updated in place rather than read twice
    and copied by a select over every leaf.
    """

    def apply(operands):
        grads, params, opt_state = operands
        updates, opt_state = tx.update(
            grads, opt_state, params, global_norm=global_norm
        )
        return optax.apply_updates(params, updates), opt_state

    def keep(operands):
        _, params, opt_state = operands
        return params, opt_state

    return jax.lax.cond(ok, apply, keep, (grads, state.params, state.opt_state))


def _after_step(spec: StepSpec, state, params, batch, rng, w_state, losses):
    """FAMO's update of its state from the same batch's losses under the new
    params (the same dropout mask and BN mode)."""
    outputs, _, _ = grads_lib.apply_model(
        spec.model,
        state.replace(params=params),
        params,
        batch["x"],
        train=True,
        rng=rng,
    )
    after = jax.lax.stop_gradient(grads_lib.task_losses(spec.tasks, outputs, batch))
    return spec.method.after_step(params["weighting"], w_state, losses, after)


def eval_step(state, x, *, model, tasks):
    """Per-window predictions: {task: [B, C] probabilities or [B] values}.

    With moving averages in the state (train.ema_decay), they make them.
    """
    outputs, _ = model.apply(state_lib.eval_variables(state), x, train=False)
    return {t.name: tasks_lib.predictions(t, outputs[t.name]) for t in tasks}
