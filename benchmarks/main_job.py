"""The main job end to end, its logged step time against its pure step.

  .venv/bin/python -m benchmarks.main_job --config=configs/synthetic.py \
      --variants="host=;device cache=data.device_cache=True"

Each variant runs `launch.py --mode=train` in a fresh process and workdir (the
corpus and its feature cache are shared, built before the first variant and
not timed), with `--config.<field>=<value>` overrides; the table gives its
wall time, its `step_time_ms` (results.json: the mean time of a training step
in the loop, compilation, evaluation and checkpoints left out), test UA and
macro F1. The pure step is `benchmarks.common.measure` of the same config and
batch on random input: the loop's step over it says how much the input path
and the loop add (1.0: nothing).
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import common
from mtl_ser.data import corpora
from mtl_ser.experiments import sweeps

_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
_VARIANTS = flags.DEFINE_string(
    "variants",
    "host=;device cache=data.device_cache=True",
    "';'-separated name=overrides, the overrides ','-separated field=value.",
)
_SET = flags.DEFINE_string(
    "set", "", "','-separated field=value overrides of every variant."
)
_STEPS = flags.DEFINE_integer("step_steps", 20, "Timed steps of the pure step.")
_DIR = flags.DEFINE_string("dir", "", "Corpus and workdirs; default a temp dir.")

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _literal(text: str):
    """A Python literal, or the text itself (as ml_collections' flags read it)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_variants(text: str) -> list:
    """'a=x.y=1,z=2;b=' -> [("a", ["x.y=1", "z=2"]), ("b", [])]."""
    variants = []
    for item in filter(None, (v.strip() for v in text.split(";"))):
        name, _, overrides = item.partition("=")
        variants.append((name.strip(), [o for o in overrides.split(",") if o]))
    return variants


def run_variant(config_path, overrides, workdir) -> dict:
    """Trains one variant in its own process; its results and wall time."""
    command = [
        sys.executable,
        os.path.join(_ROOT, "launch.py"),
        f"--config={config_path}",
        f"--workdir={workdir}",
        "--mode=train",
        *(f"--config.{o}" for o in overrides),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} failed:\n{tail}")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    return {"seconds": seconds, **results}


def main(argv):
    del argv
    root = _DIR.value or tempfile.mkdtemp(prefix="bench_main_job_")
    shared = [o for o in _SET.value.split(",") if o]
    shared += [
        f"corpus.root={os.path.join(root, 'corpus')}",
        f"features.cache_dir={os.path.join(root, 'cache')}",
    ]
    # The pure step's config is the runs' (launch.py reads the values alike).
    config = sweeps.apply_overrides(
        common.load_config(_CONFIG.value),
        {k: _literal(v) for k, _, v in (o.partition("=") for o in shared)},
    )
    try:
        corpora.load_corpus(config.corpus)  # Generates the built-in corpus.
        rows = []
        for name, overrides in parse_variants(_VARIANTS.value):
            workdir = os.path.join(root, f"run_{len(rows)}")
            rows.append((name, overrides, run_variant(
                _CONFIG.value, shared + overrides, workdir
            )))  # fmt: skip
        pure = common.measure(config, config.data.batch_size, _STEPS.value)
    finally:
        if not _DIR.value:
            shutil.rmtree(root, ignore_errors=True)
    c = config
    print(
        f"{_CONFIG.value}: {c.model.name} width {c.model.width}, {c.model.dtype}, "
        f"batch {c.data.batch_size}, crops {c.data.crop_frames} x "
        f"{c.features.n_mels}, {c.train.num_steps} steps; pure step (random "
        f"input, median of {_STEPS.value}): {pure['step_ms']:.2f} ms"
    )
    print(
        "| variant | overrides | wall s | loop step ms | loop / pure step "
        "| test UA | test macro F1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, overrides, r in rows:
        s, step = r["scalars"], r["step_time_ms"]
        print(
            f"| {name} | {' '.join(overrides) or '(none)'} | {r['seconds']:.1f} "
            f"| {step:.2f} | {step / pure['step_ms']:.2f} "
            f"| {s['test/ua/emotion']:.4f} | {s['test/macro_f1/emotion']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
