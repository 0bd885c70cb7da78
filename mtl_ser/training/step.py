"""The jitted train and eval steps (pure, module level; bound with partial)."""

import jax
import optax

from mtl_ser import tasks as tasks_lib


def _apply(model, state, params, x, *, train, rng=None):
    """Runs the model; returns (outputs, embedding, new batch_stats)."""
    variables = {"params": params["model"]}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    rngs = {"dropout": rng} if rng is not None else None
    if train and state.batch_stats:
        (outputs, embedding), updates = model.apply(
            variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
        )
        return outputs, embedding, updates["batch_stats"]
    outputs, embedding = model.apply(variables, x, train=train, rngs=rngs)
    return outputs, embedding, state.batch_stats


def train_step(state, batch, *, model, tasks, tx, method, schedule):
    """One optimizer step on a (sharded) global batch.

    Args:
      state: TrainState.
      batch: {"x": [B, T, F, 1], "labels": {task: [B]}, "masks": {task: [B]}}.
      model, tasks, tx, method, schedule: static, bound with functools.partial.

    Returns:
      (new state, metrics dict of scalars named split/metric/task).
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        outputs, _, batch_stats = _apply(
            model, state, params, batch["x"], train=True, rng=dropout_rng
        )
        losses = tasks_lib.loss_vector(tasks, outputs, batch["labels"], batch["masks"])
        total, weights, weighting_state = method.combine(
            params["weighting"],
            state.weighting_state,
            losses,
            step=state.step,
            rng=dropout_rng,
        )
        return total, (losses, weights, weighting_state, batch_stats)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, aux), grads = grad_fn(state.params)
    losses, weights, weighting_state, batch_stats = aux
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        weighting_state=weighting_state,
    )
    metrics = {
        "train/loss/total": total,
        "train/grad_norm": optax.tree.norm(grads["model"]),
        "train/param_norm": optax.tree.norm(state.params["model"]),
        "train/lr": schedule(state.step),
    }
    for i, task in enumerate(tasks):
        metrics[f"train/loss/{task.name}"] = losses[i]
        metrics[f"train/weight/{task.name}"] = weights[i]
    return new_state, metrics


def eval_step(state, x, *, model, tasks):
    """Per-window predictions: {task: [B, C] probabilities or [B] values}."""
    outputs, _, _ = _apply(model, state, state.params, x, train=False)
    return {t.name: tasks_lib.predictions(t, outputs[t.name]) for t in tasks}
