"""A run built from its config: the model, its sharded state and jitted steps.

Two builders share every piece. `build_eval` is what scoring needs (the model,
the state's shapes and shardings as a restore target, the eval function): no
train step is traced and no state is made. `build_steps` adds the state itself,
born sharded, and the train step; training and the benchmarks use it, so both
time the same step.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_ser import models, weighting
from mtl_ser.data import augment, features, inputs
from mtl_ser.training import optim, sharding, xla_options
from mtl_ser.training import state as state_lib
from mtl_ser.training import step as step_lib


class EvalSteps(NamedTuple):
    """What scoring a trained state needs."""

    model: Any
    # The TrainState's shapes (jax.ShapeDtypeStruct with their shardings): the
    # target to restore a checkpoint into; nothing is allocated.
    abstract_state: Any
    state_sharding: Any
    eval_fn: Any  # (state, x) -> {task: predictions}, replicated.


class Steps(NamedTuple):
    """The model and its jitted steps, with the initial state on the mesh."""

    model: Any
    state: Any
    state_sharding: Any
    train_fn: Any  # (state, batch, device store or None) -> (state, metrics).
    eval_fn: Any  # (state, x) -> {task: predictions}, replicated.
    # params -> the model parameters' global norm, replicated. A metric of the
    # log steps only: in the train step it cost a pass over every parameter
    # at every step.
    param_norm_fn: Any


def make_model(config, tasks):
    """The MultiTaskModel of config.model with one head per task."""
    m = config.model
    return models.make_model(
        m.name,
        tuple((t.name, t.output_size) for t in tasks),
        width=m.width,
        hidden=m.hidden,
        dropout=m.dropout,
        batch_norm=m.batch_norm,
        deltas=m.deltas,
        pool_size=m.pool_size,
        dtype=jnp.dtype(m.dtype),
    )


def input_spec(config, stats=None) -> inputs.InputSpec:
    """How the train step makes its model input (data/inputs.py)."""
    mels = config.features.n_mels
    mean, std = stats if stats is not None else (np.zeros(mels), np.ones(mels))
    on_device = config.data.features_on_device
    return inputs.InputSpec(
        crop=config.data.crop_frames,
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        noise=augment.make_noise(config.data, config.features),
        spec_augment=augment.make_spec_augment(config.data),
        log_mel=features.log_mel_settings(config.features) if on_device else None,
    )


def step_batch_size(config) -> int:
    """Examples per train step: data.batch_size times the method's batches."""
    return config.data.batch_size * weighting.batches_per_step(config.weighting.name)


class _Parts(NamedTuple):
    model: Any
    method: Any
    tx: Any
    rep_grad: bool
    init_fn: Any  # rng -> TrainState (pure).


def _parts(config, tasks, *, steps_per_epoch: int = 1, method=None) -> _Parts:
    c = config
    model = make_model(c, tasks)
    if method is None:
        method = weighting.make_method(
            c.weighting, tasks, steps_per_epoch=steps_per_epoch
        )
    # GradDrop is defined on the representation only.
    rep_grad = c.weighting.rep_grad or method.rep_grad_only
    tx = optim.make_optimizer(c.optim, c.train.num_steps)
    init_fn = functools.partial(
        state_lib.init_state,
        model=model,
        method=method,
        tx=tx,
        num_tasks=len(tasks),
        input_shape=(1, c.data.crop_frames, c.features.n_mels, 1),
        rep_grad=rep_grad,
        ema=c.train.ema_decay > 0,
    )
    return _Parts(model, method, tx, rep_grad, init_fn)


def _eval_fn(config, model, tasks, mesh, state_sharding):
    return jax.jit(
        functools.partial(step_lib.eval_step, model=model, tasks=tasks),
        in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
        compiler_options=xla_options.compiler_options(config.train),
    )


def build_eval(config, tasks, mesh) -> EvalSteps:
    """The model, the state's restore target and the eval function of a run."""
    parts = _parts(config, tasks)
    abstract, state_sharding = state_lib.abstract_state(
        config.seed, mesh, parts.init_fn
    )
    eval_fn = _eval_fn(config, parts.model, tasks, mesh, state_sharding)
    return EvalSteps(parts.model, abstract, state_sharding, eval_fn)


def build_steps(
    config, tasks, mesh, *, steps_per_epoch: int = 1, method=None, stats=None
) -> Steps:
    """Builds the model, weighting, optimizer, sharded state and jitted steps.

    `steps_per_epoch` serves the weighting methods defined per epoch (DWA,
    GradNorm); `method` replaces the configured weighting (benchmarks).
    `stats`, the training split's band (mean, std), normalises the model input
    in the train step (default 0 and 1: benchmarks, whose batches carry "x").
    """
    c = config
    parts = _parts(c, tasks, steps_per_epoch=steps_per_epoch, method=method)
    state, state_sharding = state_lib.create_state(c.seed, mesh, parts.init_fn)
    repl = sharding.replicated(mesh)
    spec = step_lib.StepSpec(
        model=parts.model,
        tasks=tuple(tasks),
        tx=parts.tx,
        method=parts.method,
        schedule=optim.make_schedule(c.optim, c.train.num_steps),
        rep_grad=parts.rep_grad,
        per_task_grads=c.weighting.per_task_grads,
        skip_nonfinite=c.train.on_nonfinite == "skip",
        inputs=input_spec(c, stats),
        ema_decay=c.train.ema_decay,
    )
    train_fn = jax.jit(  # (state, batch, device store or None).
        functools.partial(step_lib.train_step, spec=spec),
        in_shardings=(state_sharding, sharding.batch_sharding(mesh), repl),
        out_shardings=(state_sharding, repl),
        donate_argnums=0,
        compiler_options=xla_options.compiler_options(c.train),
    )
    eval_fn = _eval_fn(c, parts.model, tasks, mesh, state_sharding)
    param_norm_fn = jax.jit(
        lambda params: optax.tree.norm(params["model"]),
        in_shardings=(state_sharding.params,),
        out_shardings=repl,
    )
    return Steps(parts.model, state, state_sharding, train_fn, eval_fn, param_norm_fn)
