"""train_and_evaluate: the training loop, read as a table of contents."""

import os
import time
from typing import NamedTuple

import jax
from tqdm import tqdm

from mtl_ser.data import (
    audio,
    corpora,
    normalisation,
    pipeline,
    run_data,
    statistics,
)
from mtl_ser.training import (
    analysis,
    checkpointing,
    checks,
    evaluate,
    experiment,
    faults,
    preemption,
    sharding,
)
from mtl_ser.training import state as state_lib
from mtl_ser.training import workdir as workdir_lib
from mtl_ser.training import writer as writer_lib


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
        # Corpus and data errors found here leave no trace; the config was
        # validated on entry, once.
        exp = experiment.Experiment(config, checked=True)
        workdir_lib.save_config(workdir, config_dict)
        if jax.process_index() == 0:
            normalisation.save(workdir, exp.data)  # What prediction needs.
            path = run_data.write_excluded(workdir, exp.data)  # Or removes one.
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


class _Due(NamedTuple):
    """What a step is due for, besides training."""

    save: bool  # A checkpoint: every train.checkpoint_every, the end, a stop.
    evaluate: bool  # Validation: every train.eval_every and the end.
    log: bool  # Metrics: every train.log_every, and whenever the two above are.


def _due(train_cfg, done: int, end: int, stop_at, stop, has_val: bool) -> _Due:
    t = train_cfg
    save = done % t.checkpoint_every == 0 or done in (end, stop_at) or stop is not None
    evaluate = (done % t.eval_every == 0 or done == end) and not stop and has_val
    return _Due(save, evaluate, save or evaluate or done % t.log_every == 0)


class _Throughput:
    """Samples/s between log steps, and the mean step time of the session;
    compilation (the first interval), evaluation and saving left out."""

    def __init__(self, start: int, batch_size: int):
        self.start, self.batch_size = start, batch_size
        self.last_step, self.last_time = start, time.perf_counter()
        self.steps, self.seconds = 0, 0.0

    def lap(self, done: int) -> float:
        now = time.perf_counter()
        rate = (done - self.last_step) * self.batch_size / (now - self.last_time)
        if self.last_step > self.start:  # The first interval holds the compilation.
            self.steps += done - self.last_step
            self.seconds += now - self.last_time
        self.last_step, self.last_time = done, now
        return rate

    def restart(self) -> None:
        """After work that is not a step (evaluation, saving)."""
        self.last_time = time.perf_counter()

    def mean_step_ms(self):
        return 1e3 * self.seconds / self.steps if self.steps else None


def _progress_bar(train_cfg, start: int, end: int):
    if start < end and jax.process_index() == 0:
        print("Compiling the train step (the first step waits for it) ...", flush=True)
    return tqdm(
        total=end,
        initial=start,
        disable=not train_cfg.progress_bar or jax.process_index() != 0,
        unit="step",
        dynamic_ncols=True,
    )


class _Loop:
    """The step loop of one training session and what it talks to."""

    def __init__(self, exp, workdir, ckpt, writer, lock, stops):
        self.exp, self.workdir = exp, workdir
        self.ckpt, self.writer, self.lock, self.stops = ckpt, writer, lock, stops

    def train(self, state, train_iter, stop_at):
        """Runs to the last step; returns the final state, or None at stop_at.

        Raises Preempted after saving when a stop was requested.
        """
        exp, c = self.exp, self.exp.config
        start, end = int(jax.device_get(state.step)), c.train.num_steps
        self.bar = _progress_bar(c.train, start, end)
        self.throughput = _Throughput(start, exp.batch_size)
        for done in range(start + 1, end + 1):
            batch = sharding.from_process_local(next(train_iter), exp.mesh)
            with jax.transfer_guard("disallow"):
                state, metrics = exp.train_fn(state, batch, exp.store)
            self.bar.update(1)
            stop = self.stops.requested(done)
            due = _due(c.train, done, end, stop_at, stop, exp.has_val)
            if due.log:
                self.log(done, state, metrics)
            if due.evaluate:
                self.evaluate(done, state)
            if due.save:
                self.ckpt.save_latest(done, state, train_iter, c.to_dict())
            if due.evaluate or due.save:
                self.throughput.restart()
            if stop is not None:
                self.bar.close()
                self.ckpt.wait()
                raise preemption.Preempted(done, stop)
            if done == stop_at:
                self.bar.close()
                return None
        self.bar.close()
        exp.step_time_ms = self.throughput.mean_step_ms()
        return state

    def log(self, done: int, state, metrics) -> None:
        """Writes the step's metrics, after checking it was finite."""
        metrics = jax.device_get(metrics)
        norm = self.exp.param_norm_fn(state.params)
        metrics["train/param_norm"] = jax.device_get(norm)
        self.check_faults(state)  # Before anything is saved.
        self.lock.refresh()
        metrics["train/samples_per_sec"] = self.throughput.lap(done)
        self.writer.write(done, metrics)
        self.bar.set_postfix(
            loss=f"{metrics['train/loss/total']:.3f}",
            samples_per_s=f"{metrics['train/samples_per_sec']:.0f}",
        )

    def evaluate(self, done: int, state) -> None:
        """Validation metrics, and the best checkpoint when they are best."""
        c = self.exp.config
        scalars, _ = self.exp.evaluate(state, "val", "val")
        self.writer.write(done, scalars)
        if c.train.evaluate_at == "best":
            self.ckpt.save_best(done, state, scalars)
        if jax.process_index() == 0:  # tqdm.write ignores `disable`.
            self.bar.write(
                f"step {done}: {c.train.best_metric} = "
                f"{scalars[c.train.best_metric]:.4f}"
            )

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

    `config` is the run's own (workdir_lib.load_config; workdir.evaluation_config).

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
    exp = experiment.Experiment(config, train=False)
    latest = ckpt.latest_step()
    if latest is not None:
        state = checkpointing.restore_state(ckpt.latest, latest, exp.state)[0]
    else:  # Only a best checkpoint: it stands for the run's last state too.
        state = ckpt.restore_best(exp.state)
    results = final_evaluation(exp, state, ckpt, workdir)
    ckpt.close()
    workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
    return results
