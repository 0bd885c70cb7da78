"""How the train step gets its gradients (pure functions, traced inside it).

Loss-based methods: one backward pass of the scalarised total. Gradient-based
methods: the per-task gradients of the shared parameters ([T, P]; [m, T, P] for
methods that take m batches per step) or of the shared representation, which
the method turns into one update; the heads get their own task's gradient
times the method's head weights.
"""

import functools

import jax
import jax.numpy as jnp

from mtl_ser import models
from mtl_ser import tasks as tasks_lib
from mtl_ser.training import state as state_lib


def apply_model(model, state, params, x, *, train, rng=None):
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


def method_rng(rng):
    """The weighting method's key, independent of the dropout key `rng`."""
    return jax.random.fold_in(rng, 1)


def task_losses(tasks, outputs, batch):
    """[T] task losses."""
    return tasks_lib.loss_vector(tasks, outputs, batch["labels"], batch["masks"])


def loss_based_grads(state, batch, rng, *, model, tasks, method):
    """One backward pass of the method's scalarised total."""

    def loss_fn(params):
        outputs, _, batch_stats = apply_model(
            model, state, params, batch["x"], train=True, rng=rng
        )
        losses = task_losses(tasks, outputs, batch)
        total, weights, weighting_state = method.combine(
            params["weighting"],
            state.weighting_state,
            losses,
            step=state.step,
            rng=method_rng(rng),
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
        rng=method_rng(rng),
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


def _task_grads(state, batch, rng, *, model, tasks, per_task_grads):
    """(losses [T], per-task grads {tree of [T, ...]}, batch_stats) of a batch."""
    num_tasks = len(tasks)

    def losses_fn(model_params):
        outputs, _, batch_stats = apply_model(
            model, state, {"model": model_params}, batch["x"], train=True, rng=rng
        )
        return task_losses(tasks, outputs, batch), batch_stats

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


def param_grads(state, batch, rng, *, model, tasks, method, per_task_grads="vmap"):
    """Per-task grads of the shared parameters ([T, P]) -> the method's update.

    A method that takes m > 1 batches per step (MoDo, SDMGrad) gets losses
    [m, T] and grads [m, T, P]; the heads then get their gradients summed
    over the m batches, and the logged losses are the m batches' mean.
    """
    kwargs = dict(model=model, tasks=tasks, per_task_grads=per_task_grads)
    m, num_tasks = method.batches_per_step, len(tasks)
    if m == 1:
        losses, per_task, batch_stats = _task_grads(state, batch, rng, **kwargs)
        grads_matrix = _flatten_shared(per_task, num_tasks)  # [T, P]
    else:
        losses, per_task, batch_stats = _batches_task_grads(
            state, batch, rng, m, **kwargs
        )
        flatten = functools.partial(_flatten_shared, num_tasks=num_tasks)
        grads_matrix = jax.vmap(flatten)(per_task)  # [m, T, P]
    out = _aggregate(method, state, rng, losses, grads_matrix)
    if m > 1:  # Heads, metrics and logs see the sum (mean) over the batches.
        per_task = jax.tree.map(lambda g: g.sum(0), per_task)
        grads_matrix, losses = grads_matrix.sum(0), losses.mean(0)
    shared = _unflatten_shared(out.update, state.params["model"])
    return _assemble(out, shared, per_task, losses, grads_matrix, tasks, batch_stats)


def rep_grads(state, batch, rng, *, model, tasks, method, per_task_grads="vmap"):
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
        return task_losses(tasks, outputs, batch)

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
