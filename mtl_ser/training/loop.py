"""train_and_evaluate: the training loop, read as a table of contents."""

import functools
import os
import time
from typing import Any, NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from mtl_ser import models, weighting
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import (
    audio,
    augment,
    batches,
    corpora,
    features,
    inputs,
    normalisation,
    pipeline,
    statistics,
)
from mtl_ser.training import (
    analysis,
    checkpointing,
    checks,
    evaluate,
    faults,
    optim,
    preemption,
    sharding,
    xla_options,
)
from mtl_ser.training import state as state_lib
from mtl_ser.training import step as step_lib
from mtl_ser.training import workdir as workdir_lib
from mtl_ser.training import writer as writer_lib


class Steps(NamedTuple):
    """The model and its jitted steps, with the initial state on the mesh."""

    model: Any
    state: Any
    state_sharding: Any
    train_fn: Any  # (state, batch) -> (state, metrics); donates the state.
    eval_fn: Any  # (state, x) -> {task: predictions}, replicated.
    # params -> the model parameters' global norm, replicated. A metric of the
    # log steps only: in the train step it cost a pass over every parameter
    # at every step.
    param_norm_fn: Any


def build_steps(
    config, tasks, mesh, *, steps_per_epoch: int = 1, method=None, stats=None
) -> Steps:
    """Builds the model, weighting, optimizer, sharded state and jitted steps.

    Used by training and by the benchmarks, so both time the same step.
    `steps_per_epoch` serves the weighting methods defined per epoch (DWA,
    GradNorm); `method` replaces the configured weighting (benchmarks).
    `stats`, the training split's band (mean, std), normalises the model input
    in the train step (default 0 and 1: benchmarks, whose batches carry "x").
    """
    c = config
    model = models.make_model(
        c.model.name,
        tuple((t.name, t.output_size) for t in tasks),
        width=c.model.width,
        hidden=c.model.hidden,
        dropout=c.model.dropout,
        batch_norm=c.model.batch_norm,
        deltas=c.model.deltas,
        pool_size=c.model.pool_size,
        dtype=jnp.dtype(c.model.dtype),
    )
    if method is None:
        method = weighting.make_method(
            c.weighting, tasks, steps_per_epoch=steps_per_epoch
        )
    # GradDrop is defined on the representation only.
    rep_grad = c.weighting.rep_grad or method.rep_grad_only
    tx = optim.make_optimizer(c.optim, c.train.num_steps)
    state, state_sharding = state_lib.create_state(
        c.seed,
        mesh,
        model=model,
        method=method,
        tx=tx,
        num_tasks=len(tasks),
        input_shape=(1, c.data.crop_frames, c.features.n_mels, 1),
        rep_grad=rep_grad,
        ema=c.train.ema_decay > 0,
    )
    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    options = xla_options.compiler_options(c.train)
    train_fn = jax.jit(  # (state, batch, device store or None).
        functools.partial(
            step_lib.train_step,
            model=model,
            tasks=tasks,
            tx=tx,
            method=method,
            schedule=optim.make_schedule(c.optim, c.train.num_steps),
            rep_grad=rep_grad,
            per_task_grads=c.weighting.per_task_grads,
            skip_nonfinite=c.train.on_nonfinite == "skip",
            inputs=input_spec(c, stats),
            ema_decay=c.train.ema_decay,
        ),
        in_shardings=(state_sharding, batch_sh, repl),
        out_shardings=(state_sharding, repl),
        donate_argnums=0,
        compiler_options=options,
    )
    eval_fn = jax.jit(
        functools.partial(step_lib.eval_step, model=model, tasks=tasks),
        in_shardings=(state_sharding, batch_sh),
        out_shardings=repl,
        compiler_options=options,
    )
    param_norm_fn = jax.jit(
        lambda params: optax.tree.norm(params["model"]),
        in_shardings=(state_sharding.params,),
        out_shardings=repl,
    )
    return Steps(model, state, state_sharding, train_fn, eval_fn, param_norm_fn)


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


class Experiment:
    """Everything a run builds from its config before the first step."""

    def __init__(self, config, *, mesh=None, verbose=True):
        checks.validate_config(config)
        self.config = c = config
        self.tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
        self.data = pipeline.build_data(c, self.tasks, verbose=verbose)
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.step_time_ms = None  # Set by a training run.
        # An epoch is one pass over the train split's utterances (each one
        # random crop), as the per-epoch weighting methods count it.
        self.batch_size = step_batch_size(c)
        self.steps_per_epoch = -(
            -len(self.data.splits["train"].rows) // self.batch_size
        )
        steps = build_steps(
            c,
            self.tasks,
            self.mesh,
            steps_per_epoch=self.steps_per_epoch,
            stats=(self.data.mean, self.data.std),
        )
        self.model, self.state, self.train_fn, self.eval_fn = (
            steps.model,
            steps.state,
            steps.train_fn,
            steps.eval_fn,
        )
        self.param_norm_fn = steps.param_norm_fn
        # Validation runs only when there are validation speakers.
        self.has_val = len(self.data.splits["val"].rows) > 0
        self.table, self.store = self._crop_source(verbose)

    def _crop_source(self, verbose):
        """(crop table, device store or None): where training crops come from.

        With data.device_cache, the training split's log-mels (and speed
        copies) are replicated on every device when they fit under
        data.device_cache_max_mb, and the host sends only store indices.
        Replicated rather than sharded: every device then gathers its own
        share of the batch locally, and every public SER corpus fits
        (EmoDB 37 MB, IEMOCAP about 2 GB in float32).
        """
        d = self.config.data
        table = batches.crop_table(self.data.splits["train"])
        if not d.device_cache:
            return table, None
        resident = batches.device_frames(table, d.device_cache_max_mb * 2**20)
        if resident is None:
            if verbose:
                print(
                    "data.device_cache: the training log-mels exceed "
                    f"data.device_cache_max_mb={d.device_cache_max_mb:g}; crops are "
                    "read on the host",
                    flush=True,
                )
            return table, None
        frames, table = resident
        if verbose:
            print(
                f"data.device_cache: {frames.nbytes / 2**20:.1f} MB of training "
                f"log-mels on each of {self.mesh.size} device(s)",
                flush=True,
            )
        return table, sharding.replicate(frames, self.mesh)

    def train_iterator(self):
        """This process's training batches; checkpointable (Grain's state)."""
        c = self.config
        ds = pipeline.train_dataset(
            self.data.splits["train"],
            self.data,
            crop=c.data.crop_frames,
            batch_size=self.batch_size,
            seed=c.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            fixed=c.data.inputs == "fixed",
            read_threads=c.data.read_threads,
            table=self.table,
        )
        if c.data.num_workers > 0:
            options = grain.MultiprocessingOptions(num_workers=c.data.num_workers)
            ds = ds.mp_prefetch(options)
        return iter(ds)

    def predict(self, state, split_name: str, *, progress=False) -> dict:
        """A split's utterance-level predictions, in label units."""
        preds = evaluate.predict_split(
            self.eval_fn,
            state,
            self.data.splits[split_name],
            self.data,
            self.mesh,
            progress=progress and self.config.train.progress_bar,
            **evaluate.windowing(self.config.data),
        )
        return self.data.unstandardise(preds)

    def evaluate(self, state, split_name: str, prefix: str):
        """(scalars named prefix/metric/task, confusion matrices) of a split."""
        preds = self.predict(state, split_name)
        split = self.data.splits[split_name]
        return evaluate.split_metrics(prefix, self.tasks, split, preds)


def train_and_evaluate(
    config, workdir: str, *, stop_at=None, allow_config_change: bool = False
):
    """Trains (resuming from `workdir` if it holds a checkpoint) and evaluates.

    Args:
      config: the full config.
      workdir: where checkpoints, metrics.jsonl and results.json go.
      stop_at: stop after this step with a checkpoint, as if preempted (tests).
      allow_config_change: resume a workdir made with another config.

    Returns:
      The results dict (also written to results.json), or None if stopped early.

    Raises:
      preemption.Preempted: SIGTERM/SIGINT; a checkpoint was saved first.
      faults.NonFiniteError: a non-finite loss or gradient (see train.on_nonfinite).
      workdir_lib.WorkdirError: the workdir is in use, or has another config.
    """
    checks.validate_config(config)  # Before the workdir exists.
    workdir_lib.check_writable(workdir, "--workdir")
    try:
        return _locked_train_and_evaluate(
            config, workdir, stop_at=stop_at, allow_config_change=allow_config_change
        )
    except (
        checks.ConfigError,
        workdir_lib.WorkdirError,
        corpora.CorpusError,
        audio.AudioError,
    ):  # Refused before any work: no empty workdir is left behind.
        workdir_lib.remove_if_empty(workdir)
        raise


def _locked_train_and_evaluate(config, workdir, *, stop_at, allow_config_change):
    c = config
    with (
        workdir_lib.Lock(workdir, stale_after_s=c.train.lock_stale_after_s) as lock,
        preemption.StopRequests() as stops,
    ):
        config_dict = c.to_dict()
        workdir_lib.check_config(workdir, config_dict, allow_change=allow_config_change)
        exp = Experiment(config)  # Config errors found here leave no trace.
        workdir_lib.save_config(workdir, config_dict)
        if jax.process_index() == 0:
            normalisation.save(workdir, exp.data)  # What prediction needs.
            path = pipeline.write_excluded(workdir, exp.data)  # Or removes one.
            if path:
                print(f"Unusable files listed in {path}", flush=True)
        ckpt = checkpointing.Checkpointer(
            workdir, keep=c.train.keep_checkpoints, best_metric=c.train.best_metric
        )
        train_iter = exp.train_iterator()
        state = exp.state
        if ckpt.latest_step() is not None:
            state = ckpt.restore_latest(state, train_iter)
            print(f"Resumed from step {ckpt.latest_step()} in {workdir}", flush=True)
        writer = writer_lib.MetricWriter(
            workdir,
            tensorboard=c.train.tensorboard,
            after_step=int(jax.device_get(state.step)),
        )
        loop = _Loop(exp, workdir, ckpt, writer, lock, stops)
        try:
            state = loop.train(state, train_iter, stop_at)
            if state is not None:
                results = final_evaluation(exp, state, ckpt, workdir)
                writer.write(c.train.num_steps, results["scalars"])
        finally:
            ckpt.close()  # Waits for the saves in flight.
            writer.close()
        if state is None:
            return None
        workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
    return results


class _Loop:
    """The step loop of one training session and what it talks to."""

    def __init__(self, exp, workdir, ckpt, writer, lock, stops):
        self.exp, self.workdir = exp, workdir
        self.ckpt, self.writer, self.lock, self.stops = ckpt, writer, lock, stops

    def train(self, state, train_iter, stop_at):
        """Runs to the last step; returns the final state, or None at stop_at.

        Raises Preempted after saving when a stop was requested.
        """
        exp, ckpt, writer = self.exp, self.ckpt, self.writer
        c = exp.config
        start, end = int(jax.device_get(state.step)), c.train.num_steps
        bar = tqdm(
            total=end,
            initial=start,
            disable=not c.train.progress_bar or jax.process_index() != 0,
            unit="step",
            dynamic_ncols=True,
        )
        if start < end and jax.process_index() == 0:
            print(
                "Compiling the train step (the first step waits for it) ...", flush=True
            )
        last_step, last_time = start, time.perf_counter()
        timed_steps, timed_seconds = 0, 0.0  # Excludes compilation, eval, saving.
        for done in range(start + 1, end + 1):
            batch = sharding.from_process_local(next(train_iter), exp.mesh)
            with jax.transfer_guard("disallow"):
                state, metrics = exp.train_fn(state, batch, exp.store)
            bar.update(1)
            stop = self.stops.requested(done)
            save = done % c.train.checkpoint_every == 0 or done in (end, stop_at)
            save = save or stop is not None
            run_eval = (done % c.train.eval_every == 0 or done == end) and not stop
            run_eval = run_eval and exp.has_val
            if save or run_eval or done % c.train.log_every == 0:
                metrics = jax.device_get(metrics)
                metrics["train/param_norm"] = jax.device_get(
                    exp.param_norm_fn(state.params)
                )
                self.check_faults(state)  # Before anything is saved.
                self.lock.refresh()
                now = time.perf_counter()
                metrics["train/samples_per_sec"] = (
                    (done - last_step) * exp.batch_size / (now - last_time)
                )
                if last_step > start:  # The first interval holds the compilation.
                    timed_steps += done - last_step
                    timed_seconds += now - last_time
                last_step, last_time = done, now
                writer.write(done, metrics)
                bar.set_postfix(
                    loss=f"{metrics['train/loss/total']:.3f}",
                    samples_per_s=f"{metrics['train/samples_per_sec']:.0f}",
                )
            if run_eval:
                scalars, _ = exp.evaluate(state, "val", "val")
                writer.write(done, scalars)
                if c.train.evaluate_at == "best":
                    ckpt.save_best(done, state, scalars)
                if jax.process_index() == 0:  # tqdm.write ignores `disable`.
                    bar.write(
                        f"step {done}: {c.train.best_metric} = "
                        f"{scalars[c.train.best_metric]:.4f}"
                    )
            if save:
                ckpt.save_latest(done, state, train_iter, c.to_dict())
            if run_eval or save:
                last_time = time.perf_counter()  # Time steps only.
            if stop is not None:
                bar.close()
                ckpt.wait()
                raise preemption.Preempted(done, stop)
            if done == stop_at:
                bar.close()
                return None
        bar.close()
        exp.step_time_ms = 1e3 * timed_seconds / timed_steps if timed_steps else None
        return state

    def check_faults(self, state):
        """Stops the run (after a diagnostic) on a non-finite step; see faults."""
        c, names = self.exp.config, [t.name for t in self.exp.tasks]

        def describe():
            split = self.exp.data.splits["train"]
            rows = pipeline.train_batch_indices(
                len(split),
                batch_size=self.exp.batch_size,
                seed=c.seed,
                step=int(jax.device_get(state.faults["first_step"])),
                process_count=jax.process_count(),
            )
            path = faults.write_diagnostic(
                self.workdir,
                state,
                task_names=names,
                batch_uids=[split.uids[i] for i in rows],
            )
            return path, faults.what_went_wrong(state.faults, names)

        faults.check(
            state.faults,
            policy=c.train.on_nonfinite,
            max_skipped=c.train.max_skipped_steps,
            describe=describe,
        )


def final_evaluation(exp, state, ckpt, workdir: str) -> dict:
    """Evaluates the best checkpoint (or `state`: with train.evaluate_at="last",
    or before any best checkpoint) on the val and test splits.

    Also writes `<workdir>/predictions.npz` (each utterance's predictions,
    for ensembles; evaluate.write_predictions) and `<workdir>/analysis.npz`
    for report.md's figures (see training/analysis; with report.figures on).
    """
    best = ckpt.restore_best(state) if exp.config.train.evaluate_at == "best" else None
    chosen = best if best is not None else state
    scalars, confusion, named = {}, {}, {}
    for split in ("val", "test") if exp.has_val else ("test",):
        preds = exp.predict(chosen, split, progress=True)
        data = exp.data.splits[split]
        s, conf = evaluate.split_metrics(split, exp.tasks, data, preds)
        scalars.update(s)
        confusion[split] = conf
        named[split] = (data, preds)
    evaluate.write_predictions(
        os.path.join(workdir, evaluate.PREDICTIONS), exp.tasks, named
    )
    analysis.write_analysis(exp, chosen, workdir)
    return {
        "step": int(jax.device_get(state.step)),
        "best_step": ckpt.best.best_step() if best is not None else None,
        "scalars": scalars,
        "confusion": confusion,
        "classes": {t.name: list(t.classes) for t in exp.tasks if t.classes},
        "num_params": state_lib.param_count(state.params["model"]),
        # Mean train step time after compilation (this process, this session).
        "step_time_ms": exp.step_time_ms,
        "skipped_steps": int(jax.device_get(state.faults["skipped"])),
        # How the inputs were standardised; "speaker" read the test speakers'
        # audio before scoring them (data/statistics.py).
        "normalisation": exp.config.data.normalisation,
        "transductive": statistics.is_transductive(exp.config.data.normalisation),
    }


def evaluate_workdir(config, workdir: str) -> dict:
    """Evaluates a run's best (else latest) checkpoint; writes results.json.

    `config` is the run's own (predict.load_config; workdir.evaluation_config).

    Raises:
      workdir_lib.WorkdirError: the run has no checkpoint (before any work).
    """
    if not checkpointing.has_checkpoint(workdir):
        raise workdir_lib.WorkdirError(
            f"{workdir}: no checkpoint to evaluate (best/ and checkpoints/ hold "
            "none); train the run first"
        )
    ckpt = checkpointing.Checkpointer(
        workdir,
        keep=config.train.keep_checkpoints,
        best_metric=config.train.best_metric,
    )
    exp = Experiment(config)
    state = exp.state
    if ckpt.latest_step() is not None:
        state = ckpt.restore_latest(state, exp.train_iterator())
    results = final_evaluation(exp, state, ckpt, workdir)
    ckpt.close()
    workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
    return results
