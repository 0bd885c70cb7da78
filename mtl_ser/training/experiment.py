"""Everything a run builds from its config before its first step."""

import grain
import jax

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import batches, pipeline, run_data
from mtl_ser.training import build, checks, evaluate, sharding


class Experiment:
    """Everything a run builds from its config before the first step."""

    def __init__(self, config, *, mesh=None, verbose=True, train=True, checked=False):
        """Validates `config` (unless the caller did: `checked`), then builds
        the data and the steps.

        With `train` False (scoring a trained run), only what scoring needs:
        `state` is then the state's shapes (build.EvalSteps.abstract_state), a
        target to restore a checkpoint into, and there is no train step.
        """
        if not checked:
            checks.validate_config(config)
        self.config = c = config
        self.tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
        self.data = run_data.build_data(c, self.tasks, verbose=verbose)
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.step_time_ms = None  # Set by a training run.
        # Validation runs only when there are validation speakers.
        self.has_val = len(self.data.splits["val"].rows) > 0
        # An epoch is one pass over the train split's utterances (each one
        # random crop), as the per-epoch weighting methods count it.
        self.batch_size = build.step_batch_size(c)
        self.steps_per_epoch = -(
            -len(self.data.splits["train"].rows) // self.batch_size
        )
        if not train:
            steps = build.build_eval(c, self.tasks, self.mesh)
            self.model, self.state = steps.model, steps.abstract_state
            self.eval_fn = steps.eval_fn
            self.train_fn = self.param_norm_fn = self.table = self.store = None
            return
        steps = build.build_steps(
            c,
            self.tasks,
            self.mesh,
            steps_per_epoch=self.steps_per_epoch,
            stats=(self.data.mean, self.data.std),
        )
        self.model, self.state, self.eval_fn = steps.model, steps.state, steps.eval_fn
        self.train_fn, self.param_norm_fn = steps.train_fn, steps.param_norm_fn
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
