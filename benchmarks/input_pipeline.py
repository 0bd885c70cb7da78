"""Input pipeline throughput against the train step's consumption.

  .venv/bin/python -m benchmarks.input_pipeline --config=configs/synthetic.py \
      --batch_size=256 --workers=0,2 --read_threads=0 --batches=100

On a synthetic corpus generated into a temporary folder (no download):
- cache building: `cache.build_cache` from the wav files (decode, trim,
  librosa log-mel), timed cold, as utterances/s (once per corpus, not per
  epoch);
- the Grain training pipeline as `experiment.Experiment.train_iterator` builds it
  (`pipeline.train_dataset`: one Grain element a batch, crops gathered from
  the memory-mapped cache), with 0 worker processes (batches made in the
  training process by `data.read_threads` threads) and with N worker processes
  (`mp_prefetch`), and, without workers, each of `--read_threads`; and the same
  pipeline for `data.device_cache`, where the host makes only the crops' store
  indices; batches/s over `--batches` batches taken as fast as they come,
  after `--warmup_batches` (which hold the workers' start-up), and whether the
  first batches equal the first row's (they must);
- SpecAugment (2 time and 2 frequency masks of the config's widths) runs in
  the train step, and leaves the host's work unchanged: the step is timed with
  and without it (the per-example pipeline these batches replaced, which
  masked on the host, is in RESULTS.md's kept records);
- the train step of the same config at the same batch (`common.measure`,
  random input) on this machine, and the step consumption measured on an H200
  for three models (`H200_STEPS`): each pipeline row says, as a ratio, which of
  them it would keep fed. The pipeline and the step are timed apart, each with
  the whole machine: during training they share it.
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
from mtl_ser.data import batches, cache, corpora, pipeline, run_data

FLAGS = flags.FLAGS

# Train-step consumption (samples/s) measured on one NVIDIA H200 at commit
# 170d214 (shared/reference/GPU_NOTES.md, 2026-12-04): the main job's model
# (AlexNet w0.25, 128 x 64, float32, batch 256), AlexNet w1 bf16 and VGG-16 w1
# + BN bf16 (256 x 128, batch 256).
H200_STEPS = (
    ("main job f32", 159_857),
    ("AlexNet bf16", 63_936),
    ("VGG-16 bf16", 6_062),
)


def define_flags():
    """Defined only when run as a program, so that importing defines none."""
    flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
    flags.DEFINE_integer("batch_size", 256, "Global batch; 0: the config's.")
    flags.DEFINE_string("workers", "0,2", "Comma-separated Grain worker counts.")
    flags.DEFINE_string(
        "read_threads", "0", "Read thread counts also timed without workers."
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


def _masks(data_cfg) -> tuple:
    """(time masks, time width, frequency masks, frequency width) timed here."""
    return (2, data_cfg.time_mask_frames, 2, data_cfg.freq_mask_bands)


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
    }


def time_pipeline(ds, *, workers, batches_, warmup) -> dict:
    """batches/s of a dataset; `first`: the utt of its warm-up batches (every
    row draws the same examples and crops: the host path, the device store's
    indices, any workers or threads)."""
    if workers:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    it = iter(ds)
    try:
        first = [next(it)["utt"] for _ in range(warmup)]
        start = time.perf_counter()
        for _ in range(batches_):
            next(it)
        seconds = time.perf_counter() - start
    finally:
        if hasattr(it, "close"):  # Stops the worker processes.
            it.close()
    return {"batches_per_s": batches_ / seconds, "first": first}


def _settings(config, workers, threads) -> list:
    """(name, workers, threads, SpecAugment on, crops from the device store)."""
    default = config.data.read_threads
    pairs = [(n, default) for n in workers]
    pairs += [(0, t) for t in threads if (0, t) not in pairs]
    rows = []
    for augmented in (False, True):
        rows += [("batch", n, t, augmented, False) for n, t in pairs]
        rows.append(("batch, store indices", 0, default, augmented, True))
    return rows


def run(config, *, corpus_dir, workers, threads, batches_, warmup, step_steps):
    """Every measurement of this benchmark; see the module docstring.

    Returns:
      {"cache", "pipelines": [(name, workers, threads, augmented, result)],
       "steps": {masks on: step result}, "train_utterances"}
    """
    c = config
    c.corpus.name, c.corpus.root = "synthetic", os.path.join(corpus_dir, "corpus")
    c.corpus.num_speakers = _NUM_SPEAKERS
    c.features.cache_dir = os.path.join(corpus_dir, "cache")
    corpora.load_corpus(c.corpus)  # Generates the corpus (not timed).
    build = time_cache_build(c)
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    data = run_data.build_data(c, tasks, verbose=False)  # A cache hit.
    split = data.splits["train"]
    table = batches.crop_table(split)
    _, resident = batches.device_frames(table, max_bytes=2**40)
    kw = dict(crop=c.data.crop_frames, batch_size=c.data.batch_size, seed=c.seed)
    results, first_row = [], None
    for name, n, t, augmented, indices in _settings(c, workers, threads):
        ds = pipeline.train_dataset(
            split, data, read_threads=t, table=resident if indices else table, **kw
        )
        r = time_pipeline(ds, workers=n, batches_=batches_, warmup=warmup)
        first = r.pop("first")
        first_row = first if first_row is None else first_row
        r["same_as_first"] = all(
            np.array_equal(a, b) for a, b in zip(first, first_row, strict=True)
        )
        results.append((name, n, t, augmented, r))
    steps = {}
    for augmented in (False, True):
        masks = _masks(c.data) if augmented else (0, 20, 0, 8)
        c.data.time_masks, c.data.time_mask_frames = masks[:2]
        c.data.freq_masks, c.data.freq_mask_bands = masks[2:]
        steps[augmented] = common.measure(c, c.data.batch_size, step_steps)
    return {
        "cache": build,
        "pipelines": results,
        "steps": steps,
        "train_utterances": len(split),
    }


def print_tables(config, r):
    c, build = config, r["cache"]
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
        f"{build['utterances_per_s']:.1f} utterances/s"
    )
    for augmented, step in r["steps"].items():
        print(
            f"train step here, SpecAugment {'on' if augmented else 'off'} (random "
            f"input, median of {FLAGS.step_steps}): {step['step_ms']:.1f} ms = "
            f"{step['samples_per_s']:.0f} samples/s"
        )
    h200 = " | ".join(f"/ H200 {n} ({v:,})" for n, v in H200_STEPS)
    print(
        "| pipeline | workers | read threads | SpecAugment | batches/s | samples/s "
        f"| / step here | {h200} | same utterances as the first row |"
    )
    print("|---" * (8 + len(H200_STEPS)) + "|")
    for name, n, t, augmented, p in r["pipelines"]:
        samples = p["batches_per_s"] * c.data.batch_size
        step = r["steps"][augmented]["samples_per_s"]
        feeds = " | ".join(f"{samples / v:.2f}" for _, v in H200_STEPS)
        print(
            f"| {name} | {n} | {t} | {'on' if augmented else 'off'} "
            f"| {p['batches_per_s']:.1f} | {samples:.0f} "
            f"| {samples / step:.1f}x | {feeds} "
            f"| {'yes' if p['same_as_first'] else 'NO'} |"
        )


def main(argv):
    del argv
    config = common.load_config(FLAGS.config)
    if FLAGS.batch_size:
        config.data.batch_size = FLAGS.batch_size
    if FLAGS.utterances_per_speaker:
        config.corpus.utterances_per_speaker = FLAGS.utterances_per_speaker
    corpus_dir = FLAGS.corpus_dir or tempfile.mkdtemp(prefix="bench_input_")
    try:
        r = run(
            config,
            corpus_dir=corpus_dir,
            workers=[int(n) for n in FLAGS.workers.split(",")],
            threads=[int(n) for n in FLAGS.read_threads.split(",") if n.strip()],
            batches_=FLAGS.batches,
            warmup=FLAGS.warmup_batches,
            step_steps=FLAGS.step_steps,
        )
    finally:
        if not FLAGS.corpus_dir:
            shutil.rmtree(corpus_dir, ignore_errors=True)
    print_tables(config, r)


if __name__ == "__main__":
    define_flags()
    app.run(main)
