"""Train-step throughput on random input (no data pipeline).

Weighting methods on one config's model:

  .venv/bin/python -m benchmarks.train_step --config=configs/synthetic.py \
      --batch_sizes=32,64 --steps=20 --weightings=equal,uncertainty,pcgrad

Models, compute dtypes and where the log-mels come from (`--models`, presets of
benchmarks.common.PRESETS, each at its default batch sizes, weighting `equal`;
`--inputs=cache,device`: cached log-mels, or audio whose log-mels the step makes,
data.features_on_device):

  .venv/bin/python -m benchmarks.train_step --models=synthetic,alexnet,vgg11 \
      --dtypes=float32,bfloat16 --inputs=cache,device --steps=5

`--set="optim.grad_clip=0.0;model.dropout=0.0"` changes config fields of --config or
of every --models preset (what a part of the step costs: time the step without it).

Reports AOT compile time, median step time over `steps` timed steps after 3
warm-up steps (block_until_ready each step), samples/s, XLA's FLOP estimate as
achieved GFLOP/s and as a fraction of the matmul rate (in the row's dtype)
measured at the start of the same run, and the compiled program's temp memory.
bfloat16 rows compute in bfloat16 with float32 parameters and optimizer
(`model.dtype`). Compare figures only within one run: this machine drifts 5-10%
between runs.
"""

import ast

import jax
from absl import app, flags

from benchmarks import common
from mtl_ser import sweeps

_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
_BATCHES = flags.DEFINE_string("batch_sizes", "32", "Comma-separated global batches.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per setting.")
_WEIGHTINGS = flags.DEFINE_string(
    "weightings", "equal,uncertainty", "Comma-separated weighting methods."
)
_MODELS = flags.DEFINE_string(
    "models",
    "",
    f"Comma-separated presets of {list(common.PRESETS)}: the models x dtypes "
    "table instead of the weightings one.",
)
_DTYPES = flags.DEFINE_string("dtypes", "float32", "With --models: compute dtypes.")
_INPUTS = flags.DEFINE_string(
    "inputs",
    "cache",
    "With --models: 'cache' (log-mel batches), 'device' (audio batches, the "
    "log-mels made in the step: data.features_on_device), or both.",
)
_MODEL_BATCHES = flags.DEFINE_string(
    "model_batch_sizes", "", "With --models: batches instead of each preset's own."
)
_SET = flags.DEFINE_string(
    "set",
    "",
    "';'-separated config overrides field=value, applied to --config or to every "
    "--models preset (values as Python literals), e.g. "
    "\"optim.grad_clip=0.0;optim.name='sgd'\".",
)


def parse_overrides(text: str) -> dict:
    """'a.b=1;c.d=\'x\'' -> {'a.b': 1, 'c.d': 'x'}."""
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set: {item!r} is not field=value")
        overrides[key.strip()] = ast.literal_eval(value.strip())
    return overrides


def _row(r, peak) -> str:
    return (
        f"| {r['compile_s']:.1f} | {r['step_ms']:.1f} | {r['samples_per_s']:.0f} "
        f"| {r['gflop_per_s']:.1f} | {r['gflop_per_s'] / peak:.2f} "
        f"| {r['temp_mib']:.0f} | {r['params']:,} |"
    )


def weightings_table():
    overrides = parse_overrides(_SET.value)
    config = sweeps.apply_overrides(common.load_config(_CONFIG.value), overrides)
    peak = common.matmul_peak_gflops()
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"model {config.model.name} width {config.model.width}, "
        f"input [B, {config.data.crop_frames}, {config.features.n_mels}, 1], "
        f"{config.model.dtype}, {config.optim.name}; matmul peak {peak:.0f} GFLOP/s"
        + (f"; overrides {overrides}" if overrides else "")
    )
    print(
        "| weighting | batch | compile s | step ms | samples/s | GFLOP/s "
        "| of peak | temp MiB | params |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in _WEIGHTINGS.value.split(","):
        config.weighting.name = name
        for batch_size in [int(b) for b in _BATCHES.value.split(",")]:
            r = common.measure(config, batch_size, _STEPS.value)
            print(f"| {name} | {batch_size} " + _row(r, peak), flush=True)


def models_table():
    dtypes = _DTYPES.value.split(",")
    overrides = parse_overrides(_SET.value)
    peaks = {d: common.matmul_peak_gflops(dtype=d) for d in dtypes}
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        "weighting equal, adam, random input; matmul peak "
        + ", ".join(f"{d} {p:.0f}" for d, p in peaks.items())
        + " GFLOP/s"
        + (f"; overrides {overrides}" if overrides else "")
    )
    print(
        "| model | input [T, F] | log-mels | dtype | batch | compile s | step ms "
        "| samples/s | GFLOP/s | of peak | temp MiB | params |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in _MODELS.value.split(","):
        batches = common.PRESETS[preset][2]
        if _MODEL_BATCHES.value:
            batches = [int(b) for b in _MODEL_BATCHES.value.split(",")]
        for inputs in _INPUTS.value.split(","):
            for dtype in dtypes:
                config = sweeps.apply_overrides(common.make_config(preset), overrides)
                config.model.dtype = dtype
                config.weighting.name = "equal"
                config.data.features_on_device = inputs == "device"
                for batch_size in batches:
                    r = common.measure(config, batch_size, _STEPS.value)
                    print(
                        f"| {preset} ({common.PRESETS[preset][3]}) "
                        f"| {config.data.crop_frames} x {config.features.n_mels} "
                        f"| {'in the step' if inputs == 'device' else 'cached'} "
                        f"| {dtype} | {batch_size} " + _row(r, peaks[dtype]),
                        flush=True,
                    )


def main(argv):
    del argv
    if _MODELS.value:
        models_table()
    else:
        weightings_table()


if __name__ == "__main__":
    app.run(main)
