"""The jitted train and eval steps (pure, module level; bound with partial)."""

import functools

import jax
import jax.numpy as jnp
import optax

from mtl_ser import models
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import inputs as inputs_lib
from mtl_ser.training import state as state_lib


def _apply(model, state, params, x, *, train, rng=None):
    """Runs the model; returns (outputs, embedding, new batch_stats)."""
    variables = state_lib.model_variables(params["model"], state.batch_stats)
    rngs = {"dropout": rng} if rng is not None else None
    if train and state.batch_stats:
        (outputs, embedding), updates = model.apply(
            variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
        )
        return outputs, embedding, updates["batch_stats"]
    outputs, embedding = model.apply(variables, x, train=train, rngs=rngs)
    return outputs, embedding, state.batch_stats


def _flatten_shared(per_task, num_tasks):
    """Stacks the shared (non-head) leaves of per-task grads into [T, P]."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(per_task)
    rows = [
        g.reshape(num_tasks, -1) for path, g in leaves if not models.is_head_path(path)
    ]
    return jnp.concatenate(rows, axis=1)


def _unflatten_shared(update, like):
    """Inverse of _flatten_shared for one [P] vector; heads get zeros."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    out, offset = [], 0
    for path, leaf in leaves:
        if models.is_head_path(path):
            out.append(jnp.zeros_like(leaf))
        else:
            out.append(update[offset : offset + leaf.size].reshape(leaf.shape))
            offset += leaf.size
    return jax.tree_util.tree_unflatten(treedef, out)


def _head_grads(per_task, head_weights):
    """sum_t head_weights[t] * per-task grads, on the head leaves only."""
    return jax.tree_util.tree_map_with_path(
        lambda path, g: (
            jnp.tensordot(head_weights, g, axes=1)
            if models.is_head_path(path)
            else jnp.zeros(g.shape[1:], g.dtype)
        ),
        per_task,
    )


def _gradient_stats(gram, tasks):
    """Per-task gradient norms and pairwise cosines from the Gram matrix."""
    norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
    cos = gram / jnp.maximum(norms[:, None] * norms[None, :], 1e-30)
    metrics = {}
    for i, a in enumerate(tasks):
        metrics[f"train/task_grad_norm/{a.name}"] = norms[i]
        for j in range(i + 1, len(tasks)):
            metrics[f"train/grad_cos/{a.name}-{tasks[j].name}"] = cos[i, j]
    return metrics


def _method_rng(rng):
    """The weighting method's key, independent of the dropout key `rng`."""
    return jax.random.fold_in(rng, 1)


def _inputs_rng(rng):
    """The key of the model input's noise and masks, independent of the dropout
    key `rng`."""
    return jax.random.fold_in(rng, 2)


def _task_losses(tasks, outputs, batch, poison=None):
    """[T] task losses; `poison` ([T] of 1 and NaN) injects faults (tests)."""
    losses = tasks_lib.loss_vector(tasks, outputs, batch["labels"], batch["masks"])
    return losses if poison is None else losses * poison


def _poison(step, num_tasks, nan_at):
    """[T]: NaN for task nan_at[1] at 1-based step nan_at[0], else ones; or None."""
    if nan_at is None:
        return None
    at_step, task = nan_at
    hit = (step + 1 == at_step) & (jnp.arange(num_tasks) == task)
    return jnp.where(hit, jnp.nan, 1.0).astype(jnp.float32)


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


def _loss_based_grads(state, batch, rng, *, model, tasks, method, poison=None):
    """One backward pass of the method's scalarised total."""

    def loss_fn(params):
        outputs, _, batch_stats = _apply(
            model, state, params, batch["x"], train=True, rng=rng
        )
        losses = _task_losses(tasks, outputs, batch, poison)
        total, weights, weighting_state = method.combine(
            params["weighting"],
            state.weighting_state,
            losses,
            step=state.step,
            rng=_method_rng(rng),
        )
        return total, (losses, weights, weighting_state, batch_stats)

    (total, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return total, grads, aux, {}


def _aggregate(method, state, rng, losses, matrix):
    """The gradient method's GradOutput for per-task gradient rows `matrix`."""
    extra = {}
    if method.needs_layout:  # Static: shapes and paths are known when tracing.
        extra["layout"] = state_lib.shared_layout(state.params["model"])
    return method.aggregate(
        state.params["weighting"],
        state.weighting_state,
        losses,
        matrix,
        step=state.step,
        rng=_method_rng(rng),
        **extra,
    )


def _assemble(out, shared, per_task, losses, matrix, tasks, batch_stats):
    """(total, grads, aux, stats) from a GradOutput and the shared grads.

    The heads get head_weights[t] times their own task's gradient.
    """
    heads = _head_grads(per_task, out.head_weights)
    grads = {
        "model": jax.tree_util.tree_map(jnp.add, shared, heads),
        "weighting": out.param_grads,
    }
    stats = _gradient_stats(matrix @ matrix.T, tasks)
    total = jnp.dot(out.weights, losses)
    return total, grads, (losses, out.weights, out.state, batch_stats), stats


def _task_grads(state, batch, rng, *, model, tasks, per_task_grads, poison):
    """(losses [T], per-task grads {tree of [T, ...]}, batch_stats) of a batch."""
    num_tasks = len(tasks)

    def losses_fn(model_params):
        outputs, _, batch_stats = _apply(
            model, state, {"model": model_params}, batch["x"], train=True, rng=rng
        )
        return _task_losses(tasks, outputs, batch, poison), batch_stats

    losses, vjp_fn, batch_stats = jax.vjp(
        losses_fn, state.params["model"], has_aux=True
    )
    basis = jnp.eye(num_tasks, dtype=losses.dtype)
    if per_task_grads == "vmap":
        # One batched backward pass: T cotangents e_t give the T task gradients.
        (per_task,) = jax.vmap(vjp_fn)(basis)
    else:
        # T backward passes one after another: less memory, as LibMTL does.
        rows = [vjp_fn(basis[t])[0] for t in range(num_tasks)]
        per_task = jax.tree.map(lambda *g: jnp.stack(g), *rows)
    return losses, per_task, batch_stats


def _batches_task_grads(state, batch, rng, m, **kwargs):
    """_task_grads of m interleaved batches (batch k: rows k, k + m, ...).

    Run side by side (vmap), each batch with its own forward pass, dropout key
    and BatchNorm statistics, so the cost is that of m separate batches. The
    BatchNorm running averages take the mean of the m batches' updates.
    Returns losses [m, T], grads {tree of [m, T, ...]} and the batch_stats.
    """
    split = jax.tree.map(
        lambda a: jnp.moveaxis(a.reshape(-1, m, *a.shape[1:]), 1, 0), batch
    )
    run = functools.partial(_task_grads, state, **kwargs)
    losses, per_task, stats = jax.vmap(run)(split, jax.random.split(rng, m))
    return losses, per_task, jax.tree.map(lambda s: s.mean(0), stats)


def _param_grads(
    state, batch, rng, *, model, tasks, method, per_task_grads="vmap", poison=None
):
    """Per-task grads of the shared parameters ([T, P]) -> the method's update.

    A method that takes m > 1 batches per step (MoDo, SDMGrad) gets losses
    [m, T] and grads [m, T, P]; the heads then get their gradients summed
    over the m batches, and the logged losses are the m batches' mean.
    """
    kwargs = dict(model=model, tasks=tasks, per_task_grads=per_task_grads)
    m, num_tasks = method.batches_per_step, len(tasks)
    if m == 1:
        losses, per_task, batch_stats = _task_grads(
            state, batch, rng, poison=poison, **kwargs
        )
        grads_matrix = _flatten_shared(per_task, num_tasks)  # [T, P]
    else:
        losses, per_task, batch_stats = _batches_task_grads(
            state, batch, rng, m, poison=poison, **kwargs
        )
        flatten = functools.partial(_flatten_shared, num_tasks=num_tasks)
        grads_matrix = jax.vmap(flatten)(per_task)  # [m, T, P]
    out = _aggregate(method, state, rng, losses, grads_matrix)
    if m > 1:  # Heads, metrics and logs see the sum (mean) over the batches.
        per_task = jax.tree.map(lambda g: g.sum(0), per_task)
        grads_matrix, losses = grads_matrix.sum(0), losses.mean(0)
    shared = _unflatten_shared(out.update, state.params["model"])
    return _assemble(out, shared, per_task, losses, grads_matrix, tasks, batch_stats)


def _rep_grads(
    state, batch, rng, *, model, tasks, method, per_task_grads="vmap", poison=None
):
    """Per-task grads of the shared representation z ([T, D], batch-summed).

    The trunk then receives sum_t rep_coeffs[t] dL_t/dz per sample, as
    LibMTL's rep_grad mode (the "-UB" variants) does.
    """
    num_tasks = len(tasks)
    mutable = ["batch_stats"] if state.batch_stats else False

    def trunk_fn(model_params):
        result = model.apply(
            state_lib.model_variables(model_params, state.batch_stats),
            batch["x"],
            train=True,
            rngs={"dropout": rng},
            mutable=mutable,
            method=models.MultiTaskModel.embed,
        )
        if mutable:
            z, updates = result
            return z, updates["batch_stats"]
        return result, state.batch_stats

    z, trunk_vjp, batch_stats = jax.vjp(trunk_fn, state.params["model"], has_aux=True)

    def head_losses(z, model_params):
        outputs = model.apply(
            {"params": model_params}, z, method=models.MultiTaskModel.heads
        )
        return _task_losses(tasks, outputs, batch, poison)

    losses, head_vjp = jax.vjp(head_losses, z, state.params["model"])
    # The heads are cheap, so "loop" makes no difference here: always vmap.
    del per_task_grads
    per_z, per_task = jax.vmap(head_vjp)(jnp.eye(num_tasks, dtype=losses.dtype))
    per_sample = per_z.reshape(num_tasks, per_z.shape[1], -1)  # [T, B, D]
    rep_matrix = per_sample.sum(1)  # [T, D]
    given = rep_matrix
    if method.signed_rep_grads:  # GradDrop's s_t = sum_b R_t * sign(z).
        given = (per_sample * jnp.sign(z.reshape(z.shape[0], -1))).sum(1)
    out = _aggregate(method, state, rng, losses, given)
    if out.rep_coeffs.ndim == 1:  # One coefficient per task.
        cotangent = jnp.tensordot(out.rep_coeffs, per_z, axes=1)
    else:  # [T, D]: per task and feature, the same for every sample.
        cotangent = jnp.einsum("td,tbd->bd", out.rep_coeffs, per_sample)
        cotangent = cotangent.reshape(z.shape)
    (shared,) = trunk_vjp(cotangent)
    return _assemble(out, shared, per_task, losses, rep_matrix, tasks, batch_stats)


def train_step(
    state,
    batch,
    store,
    *,
    model,
    tasks,
    tx,
    method,
    schedule,
    rep_grad: bool = False,
    per_task_grads: str = "vmap",
    skip_nonfinite: bool = False,
    nan_at=None,
    inputs: "inputs_lib.InputSpec | None" = None,
    ema_decay: float = 0.0,
):
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
      model, tasks, tx, method, schedule: static, bound with functools.partial.
      rep_grad: gradient methods: per-task gradients of the representation.
      per_task_grads: gradient methods: "vmap" (one batched backward pass over
        the T tasks) or "loop" (T backward passes in sequence, less memory).
      skip_nonfinite: a step whose losses or gradients are not all finite is
        never applied (the step counter still advances). If False, it also
        freezes every later step, so the state stays the last finite one until
        the loop stops the run; if True, later finite steps go on ("skip").
      nan_at: (1-based step, task index) whose loss is made NaN (tests), or None.
      inputs: the InputSpec that makes the model input [B, T, F, 1]; None
        only for batches that carry their "x".
      ema_decay: the decay of the state's moving averages of the model's
        variables, when it keeps them (state.ema).

    Returns:
      (new state, metrics dict of scalars named split/metric/task). For
      gradient methods, `train/loss/total` is sum_t weights[t] * L_t.
    """
    rng = jax.random.fold_in(state.rng, state.step)  # Dropout.
    x = inputs_lib.model_inputs(batch, store, _inputs_rng(rng), inputs)
    batch = {"x": x, "labels": batch["labels"], "masks": batch["masks"]}
    poison = _poison(state.step, len(tasks), nan_at)
    kwargs = dict(model=model, tasks=tasks, method=method, poison=poison)
    if not method.needs_grads:
        grad_fn = _loss_based_grads
    else:
        grad_fn = _rep_grads if rep_grad else _param_grads
        kwargs["per_task_grads"] = per_task_grads
    total, grads, aux, stats = grad_fn(state, batch, rng, **kwargs)
    losses, weights, weighting_state, batch_stats = aux
    # One pass over the gradients gives the metric, the finiteness check and
    # the clipping norm (optim.clip_by_global_norm takes it as global_norm).
    model_sq = optax.tree.norm(grads["model"], squared=True)
    global_norm = jnp.sqrt(model_sq + optax.tree.norm(grads["weighting"], squared=True))
    grad_norm = jnp.sqrt(model_sq)
    finite = (
        jnp.all(jnp.isfinite(losses)) & jnp.isfinite(total) & jnp.isfinite(global_norm)
    )
    ok = finite if skip_nonfinite else finite & (state.faults["first_step"] < 0)

    def apply(operands):
        grads, params, opt_state = operands
        updates, opt_state = tx.update(
            grads, opt_state, params, global_norm=global_norm
        )
        return optax.apply_updates(params, updates), opt_state

    def keep(operands):
        _, params, opt_state = operands
        return params, opt_state

    # A branch, not a select: the optimizer runs only on finite steps, and the
    # (donated) params and moments are updated in place rather than read twice
    # and copied by a select over every leaf.
    params, opt_state = jax.lax.cond(
        ok, apply, keep, (grads, state.params, state.opt_state)
    )
    if method.after_step is not None:
        # FAMO: the same batch, dropout mask and BN mode under the new params.
        new_state = state.replace(params=params)
        outputs, _, _ = _apply(
            model, new_state, params, batch["x"], train=True, rng=rng
        )
        after = jax.lax.stop_gradient(_task_losses(tasks, outputs, batch, poison))
        weighting_state = method.after_step(
            params["weighting"], weighting_state, losses, after
        )
    new = (batch_stats, weighting_state)
    old = (state.batch_stats, state.weighting_state)
    batch_stats, weighting_state = _guard(ok, new, old)
    new_state = state.replace(
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
    metrics = {
        "train/loss/total": total,
        "train/grad_norm": grad_norm,
        "train/lr": schedule(state.step),
        "train/skipped_steps": new_state.faults["skipped"],
        **stats,
    }
    for i, task in enumerate(tasks):
        metrics[f"train/loss/{task.name}"] = losses[i]
        metrics[f"train/weight/{task.name}"] = weights[i]
    return new_state, metrics


def eval_step(state, x, *, model, tasks):
    """Per-window predictions: {task: [B, C] probabilities or [B] values}.

    With moving averages in the state (train.ema_decay), they make them.
    """
    outputs, _ = model.apply(state_lib.eval_variables(state), x, train=False)
    return {t.name: tasks_lib.predictions(t, outputs[t.name]) for t in tasks}
