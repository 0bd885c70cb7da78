"""Input pipeline throughput against the train step's consumption.

  .venv/bin/python -m benchmarks.input_pipeline --config=configs/synthetic.py \
      --workers=0,1,2,4 --batches=200 --step_steps=20

On a synthetic corpus generated into a temporary folder (no download):
- cache building: `cache.build_cache` from the wav files (decode, trim,
  librosa log-mel), timed cold, as utterances/s and as batches/s (utterances/s
  over the batch size; the cache is built once per corpus, not per epoch);
- the Grain training pipeline (`pipeline.train_dataset`, as
  `loop.Experiment.train_iterator` builds it) with 0 worker processes (what
  training uses by default: batches made in the training process, by
  `data.read_threads` threads) and with N worker processes (`mp_prefetch` on
  the same dataset; each worker has those threads too), and, without workers,
  with each of `--read_threads` threads (16 is Grain's default); with and
  without SpecAugment (2 time and 2 frequency masks of the config's
  widths): batches/s over `--batches` batches taken as fast as they come,
  after `--warmup_batches` (which hold the workers' start-up), and whether the
  first batches equal the first pipeline's (they must: Grain's workers and
  threads keep the order). The split's size matters: Grain's shuffle costs
  per element about 60 us at 384 training utterances (the config's corpus,
  the default here) and 700 us at 24;
- the train step of the same config at the same batch (`common.measure`,
  random input): steps/s, and each pipeline's batches/s over it. The two are
  timed apart, each with the whole machine: during training they share it.
"""

import os
import shutil
import tempfile
import time

import grain
import numpy as np
from absl import app, flags

from benchmarks import common
from benchmarks.features import settings_header
from mtl_ser import tasks as tasks_lib
from mtl_ser.data import cache, corpora, examples, pipeline

FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a program, so that importing defines none."""
    flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
    flags.DEFINE_integer("batch_size", 0, "Global batch; 0: the config's.")
    flags.DEFINE_string(
        "workers", "0,1,2,4", "Comma-separated Grain worker process counts."
    )
    flags.DEFINE_string(
        "read_threads", "0,16", "Read thread counts also timed without workers."
    )
    flags.DEFINE_integer("batches", 100, "Timed batches per pipeline.")
    flags.DEFINE_integer("warmup_batches", 5, "Untimed first batches.")
    flags.DEFINE_integer("step_steps", 10, "Timed train steps.")
    flags.DEFINE_integer(
        "utterances_per_speaker",
        0,
        "Synthetic corpus size (10 speakers; a multiple of 4); 0: the config's.",
    )
    flags.DEFINE_string(
        "corpus_dir", "", "Where to generate the corpus; default a removed temp dir."
    )


# The config's splits name speakers spk06-spk09: the corpus needs 10.
_NUM_SPEAKERS = 10


def _augment(data_cfg) -> examples.SpecAugment:
    return examples.SpecAugment(
        2, data_cfg.time_mask_frames, 2, data_cfg.freq_mask_bands
    )


def time_cache_build(config) -> dict:
    """Builds the feature cache of `config.corpus` from scratch; returns rates."""
    utterances = corpora.load_corpus(config.corpus)
    shutil.rmtree(config.features.cache_dir, ignore_errors=True)
    start = time.perf_counter()
    cache.build_cache(utterances, config.features, verbose=False)
    seconds = time.perf_counter() - start
    return {
        "utterances": len(utterances),
        "seconds": seconds,
        "utterances_per_s": len(utterances) / seconds,
        "batches_per_s": len(utterances) / seconds / config.data.batch_size,
    }


def time_pipeline(config, data, *, workers, threads, augment, batches, warmup) -> dict:
    """batches/s of the training pipeline: `workers` processes, `threads` each.

    Returns:
      batches_per_s, and `first`: the utterance ids and inputs of the warm-up
      batches (to compare pipelines).
    """
    c = config
    ds = pipeline.train_dataset(
        data.splits["train"],
        data,
        crop=c.data.crop_frames,
        batch_size=c.data.batch_size,
        seed=c.seed,
        augment=augment,
        fixed=c.data.inputs == "fixed",
        read_threads=threads,
    )
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    it = iter(ds)
    try:
        first = [next(it) for _ in range(warmup)]
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        seconds = time.perf_counter() - start
    finally:
        if hasattr(it, "close"):  # Stops the worker processes.
            it.close()
    return {
        "batches_per_s": batches / seconds,
        "first": [(b["utt"], b["x"]) for b in first],
    }


def _same(a, b) -> bool:
    return all(
        np.array_equal(ua, ub) and np.array_equal(xa, xb)
        for (ua, xa), (ub, xb) in zip(a, b, strict=True)
    )


def run(config, *, corpus_dir, workers, threads, batches, warmup, step_steps) -> dict:
    """Every measurement of this benchmark; see the module docstring.

    Args:
      config: the full config; its corpus and cache are pointed at `corpus_dir`.
      corpus_dir: folder for the synthetic corpus and its feature cache.
      workers: worker process counts to time (0: no workers), with the
        config's data.read_threads.
      threads: read thread counts also timed without workers.
      batches, warmup: timed and untimed batches per pipeline.
      step_steps: timed train steps.

    Returns:
      {"cache": ..., "pipelines": [(workers, threads, augmented, result), ...],
       "step": ..., "train_utterances": ...}
    """
    c = config
    c.corpus.name, c.corpus.root = "synthetic", os.path.join(corpus_dir, "corpus")
    c.corpus.num_speakers = _NUM_SPEAKERS
    c.features.cache_dir = os.path.join(corpus_dir, "cache")
    corpora.load_corpus(c.corpus)  # Generates the corpus (not timed).
    build = time_cache_build(c)
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    data = pipeline.build_data(c, tasks, verbose=False)  # A cache hit.
    results, reference = [], {}
    default = c.data.read_threads
    settings = [(n, default) for n in workers]
    settings += [(0, t) for t in threads if (0, t) not in settings]
    for augment in (None, _augment(c.data)):
        for n, t in settings:
            r = time_pipeline(
                c,
                data,
                workers=n,
                threads=t,
                augment=augment,
                batches=batches,
                warmup=warmup,
            )
            key = augment is not None
            reference.setdefault(key, r["first"])
            r["same_as_first"] = _same(r.pop("first"), reference[key])
            results.append((n, t, augment is not None, r))
    step = common.measure(c, c.data.batch_size, step_steps)
    step["steps_per_s"] = 1e3 / step["step_ms"]
    return {
        "cache": build,
        "pipelines": results,
        "step": step,
        "train_utterances": len(data.splits["train"]),
    }


def main(argv):
    del argv
    config = common.load_config(FLAGS.config)
    if FLAGS.batch_size:
        config.data.batch_size = FLAGS.batch_size
    if FLAGS.utterances_per_speaker:
        config.corpus.utterances_per_speaker = FLAGS.utterances_per_speaker
    workers = [int(n) for n in FLAGS.workers.split(",")]
    corpus_dir = FLAGS.corpus_dir or tempfile.mkdtemp(prefix="bench_input_")
    try:
        r = run(
            config,
            corpus_dir=corpus_dir,
            workers=workers,
            threads=[int(n) for n in FLAGS.read_threads.split(",") if n.strip()],
            batches=FLAGS.batches,
            warmup=FLAGS.warmup_batches,
            step_steps=FLAGS.step_steps,
        )
    finally:
        if not FLAGS.corpus_dir:
            shutil.rmtree(corpus_dir, ignore_errors=True)
    c, build, step = config, r["cache"], r["step"]
    print(settings_header())
    print(
        f"synthetic corpus {_NUM_SPEAKERS} speakers x "
        f"{c.corpus.utterances_per_speaker} utterances "
        f"({r['train_utterances']} train); batch {c.data.batch_size} crops of "
        f"{c.data.crop_frames} x {c.features.n_mels}; model {c.model.name} "
        f"width {c.model.width}"
    )
    print(
        f"cache build (cold, {build['utterances']} wav files, n_fft "
        f"{c.features.n_fft}): {build['seconds']:.2f} s, "
        f"{build['utterances_per_s']:.1f} utterances/s = "
        f"{build['batches_per_s']:.2f} batches/s of {c.data.batch_size} utterances"
    )
    print(
        f"train step (random input, median of {FLAGS.step_steps}): "
        f"{step['step_ms']:.1f} ms = {step['steps_per_s']:.1f} steps/s"
    )
    print(
        "| workers | read threads | SpecAugment | batches/s | samples/s "
        "| pipeline / step | same batches as the first row |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, t, augmented, p in r["pipelines"]:
        print(
            f"| {n} | {t} | {'on' if augmented else 'off'} | {p['batches_per_s']:.1f} "
            f"| {p['batches_per_s'] * c.data.batch_size:.0f} "
            f"| {p['batches_per_s'] / step['steps_per_s']:.1f}x "
            f"| {'yes' if p['same_as_first'] else 'NO'} |"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
