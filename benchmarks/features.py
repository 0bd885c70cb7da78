"""Log-mel throughput: librosa one clip at a time against the jitted jnp twin.

  .venv/bin/python -m benchmarks.features --config=configs/synthetic.py \
      --clips=64 --seconds=3 --repeats=5

For each setting (the config's n_fft/hop/n_mels, plus `--extra_settings`,
default the CPU notes' 1024/160/128): clips/s of `features.log_mel` (librosa,
one clip per call, as the feature cache computes them; with the default BLAS
thread count and with one BLAS thread, via threadpoolctl) and of
`features.log_mel_jnp` jitted over a batch of `--clips` clips ([B, N] in one
call: the function is batched, which is what vmap over clips would build), the
ratio of jnp to the faster librosa, the jnp compile time, and the largest
absolute difference in dB between the two over every value of every clip
(float32 both).

The clips are utterances of the built-in synthetic corpus (speech-like, no
download), repeated cyclically to `--seconds` so that no clip ends in digital
silence. Each timing is the median of `--repeats` passes after one warm-up
pass; compare rows of one run only (this machine drifts 5-10% between runs).
"""

import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import jaxlib
import librosa
import numpy as np
import threadpoolctl
from absl import app, flags

from benchmarks import common
from mtl_ser.data import features
from mtl_ser.data.voice import synth

FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a program, so that importing defines none."""
    flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
    flags.DEFINE_integer("clips", 64, "Clips per jnp batch (and librosa pass).")
    flags.DEFINE_float("seconds", 3.0, "Clip length in seconds.")
    flags.DEFINE_integer("repeats", 5, "Timed passes per implementation.")
    flags.DEFINE_string(
        "extra_settings",
        "1024/160/128",
        "Comma-separated n_fft/hop/n_mels settings besides the config's.",
    )


def settings_header() -> str:
    """What the numbers depend on: backend, versions, allocator, threads."""
    flags_text = os.environ.get("XLA_FLAGS", "") or "none"
    threads = ", ".join(
        f"{name}={os.environ[name]}"
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        if name in os.environ
    )
    return (
        f"backend {jax.default_backend()}, {jax.device_count()} device(s) "
        f"({jax.process_count()} process(es)), {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, numpy "
        f"{np.__version__}, librosa {librosa.__version__}, python "
        f"{platform.python_version()}; allocator "
        f"{os.environ.get('LD_PRELOAD') or 'none (glibc)'}; XLA_FLAGS {flags_text}; "
        f"threads {threads or 'defaults'}"
    )


def make_clips(num_clips: int, num_samples: int, sample_rate: int) -> np.ndarray:
    """Synthetic utterances, each repeated cyclically to `num_samples`: [B, N]."""
    clips = []
    for i in range(num_clips):
        wave, _ = synth.synthesize(0, i % 10, i, sample_rate)
        clips.append(np.resize(np.asarray(wave, np.float32), num_samples))
    return np.stack(clips)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # Warm-up: librosa's first call builds its caches, jnp's compiles.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(waves: np.ndarray, params: dict, repeats: int) -> dict:
    """Times both implementations on `waves` [B, N] and compares their outputs.

    Args:
      waves: float32 clips of equal length.
      params: keyword arguments of features.log_mel (and log_mel_jnp).
      repeats: timed passes of each.

    Returns:
      librosa clips/s with the default BLAS threads and with one, jnp
      clips/s, the ratio of jnp to the faster librosa, the jnp compile time in
      seconds, and the max absolute difference in dB.
    """
    num_clips = len(waves)
    reference = []

    def run_librosa():
        reference[:] = [features.log_mel(w, **params) for w in waves]

    librosa_s = _median_seconds(run_librosa, repeats)
    # librosa's mel projection is a BLAS call on a small matrix: with the
    # default thread count a busy machine made it 7x slower than one thread.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        librosa_1_s = _median_seconds(run_librosa, repeats)
    batch = jax.device_put(jnp.asarray(waves))
    fn = jax.jit(lambda w: features.log_mel_jnp(w, **params))
    start = time.perf_counter()
    compiled = fn.lower(batch).compile()
    compile_s = time.perf_counter() - start
    out = []

    def run_jnp():
        out[:] = [compiled(batch).block_until_ready()]

    jnp_s = _median_seconds(run_jnp, repeats)
    diff = np.abs(np.asarray(out[0]) - np.stack(reference))
    return {
        "librosa_clips_per_s": num_clips / librosa_s,
        "librosa_1_thread_clips_per_s": num_clips / librosa_1_s,
        "jnp_clips_per_s": num_clips / jnp_s,
        "ratio": min(librosa_s, librosa_1_s) / jnp_s,
        "compile_s": compile_s,
        "max_abs_db": float(diff.max()),
    }


def settings_of(config, extra: str) -> list:
    """(n_fft, hop, n_mels) of the config, then of each `extra` "a/b/c" setting."""
    f = config.features
    out = [(f.n_fft, f.hop_length, f.n_mels)]
    for text in filter(None, extra.split(",")):
        setting = tuple(int(v) for v in text.split("/"))
        if len(setting) != 3:
            raise ValueError(f"--extra_settings: {text!r} is not n_fft/hop/n_mels")
        if setting not in out:
            out.append(setting)
    return out


def main(argv):
    del argv
    config = common.load_config(FLAGS.config)
    f = config.features
    waves = make_clips(FLAGS.clips, int(FLAGS.seconds * f.sample_rate), f.sample_rate)
    print(settings_header())
    print(
        f"{FLAGS.clips} synthetic clips of {FLAGS.seconds:g} s at {f.sample_rate} Hz, "
        f"fmin {f.fmin:g}, fmax {f.fmax}, top_db {f.top_db}, float32; "
        f"median of {FLAGS.repeats} passes after 1 warm-up"
    )
    print(
        "| n_fft/hop/n_mels | librosa clips/s | librosa, 1 BLAS thread "
        "| jnp clips/s | jnp / best librosa | jnp compile s | max abs diff dB |"
    )
    print("|---|---|---|---|---|---|---|")
    for n_fft, hop, n_mels in settings_of(config, FLAGS.extra_settings):
        params = dict(
            sample_rate=f.sample_rate,
            n_fft=n_fft,
            hop_length=hop,
            n_mels=n_mels,
            fmin=f.fmin,
            fmax=f.fmax,
            top_db=f.top_db,
        )
        r = measure(waves, params, FLAGS.repeats)
        print(
            f"| {n_fft}/{hop}/{n_mels} | {r['librosa_clips_per_s']:.0f} "
            f"| {r['librosa_1_thread_clips_per_s']:.0f} "
            f"| {r['jnp_clips_per_s']:.0f} | {r['ratio']:.2f} "
            f"| {r['compile_s']:.1f} | {r['max_abs_db']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
