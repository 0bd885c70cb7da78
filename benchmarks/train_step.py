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
warm-up steps (block_until_ready each step), samples/s, the compiled program's
temp memory, and:
  - model GFLOP/step: the step's convolutions and matmuls counted from its
    jaxpr, 2 FLOPs per multiply-add, every kernel tap (benchmarks/flops.py:
    the convention of paper-style MFU and of torch's FlopCounterMode);
  - model GFLOP/s: those per step time;
  - MFU: model FLOP/s over the peak of the row's dtype, the datasheet's dense
    figure on a chip of `flops.CHIP_PEAKS` (bfloat16; float32 as TF32 on
    NVIDIA GPUs and as bfloat16 passes on TPUs), else the matmul rate measured
    at the start of the same run; the header says which;
  - XLA's GFLOP/step: XLA's cost analysis of the compiled step, an estimate
    kept for reference: it adds elementwise work and skips padding taps, and on
    GPU it leaves out the cuDNN convolutions (custom calls) altogether.
bfloat16 rows compute in bfloat16 with float32 parameters and optimizer
(`model.dtype`). Compare figures only within one run: this machine drifts 5-10%
between runs.
"""

import ast

import jax
from absl import app, flags

from benchmarks import common, flops
from mtl_ser.experiments import sweeps

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


def _row(config, batch_size: int, peak: float) -> str:
    """Times `config`'s step at `batch_size`; its table cells from "compile s" on.

    Args:
        config: the experiment config.
        batch_size: global batch.
        peak: FLOP/s of the devices in the config's model.dtype (MFU's divisor).
    """
    r = common.measure(config, batch_size, _STEPS.value)
    model_flops = flops.train_step_flops(config, batch_size)
    step_s = r["step_ms"] / 1e3
    xla_flops = r["gflop_per_s"] * 1e9 * step_s
    return (
        f"| {r['compile_s']:.1f} | {r['step_ms']:.1f} | {r['samples_per_s']:.0f} "
        f"| {model_flops / 1e9:.2f} | {model_flops / step_s / 1e9:.1f} "
        f"| {model_flops / step_s / peak:.3f} | {xla_flops / 1e9:.2f} "
        f"| {r['temp_mib']:.0f} | {r['params']:,} |"
    )


_COLUMNS = (
    "compile s | step ms | samples/s | model GFLOP/step | model GFLOP/s | MFU "
    "| XLA's GFLOP/step (estimate) | temp MiB | params |"
)


def weightings_table():
    overrides = parse_overrides(_SET.value)
    config = sweeps.apply_overrides(common.load_config(_CONFIG.value), overrides)
    peak, source = flops.peak_flops(config.model.dtype)
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"model {config.model.name} width {config.model.width}, "
        f"input [B, {config.data.crop_frames}, {config.features.n_mels}, 1], "
        f"{config.model.dtype}, {config.optim.name}; MFU's peak: {source}"
        + (f"; overrides {overrides}" if overrides else "")
    )
    print("| weighting | batch | " + _COLUMNS)
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in _WEIGHTINGS.value.split(","):
        config.weighting.name = name
        for batch_size in [int(b) for b in _BATCHES.value.split(",")]:
            cells = _row(config, batch_size, peak)
            print(f"| {name} | {batch_size} " + cells, flush=True)


def models_table():
    dtypes = _DTYPES.value.split(",")
    overrides = parse_overrides(_SET.value)
    peaks = {d: flops.peak_flops(d) for d in dtypes}
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        "weighting equal, adam, random input; MFU's peak: "
        + "; ".join(source for _, source in peaks.values())
        + (f"; overrides {overrides}" if overrides else "")
    )
    print("| model | input [T, F] | log-mels | dtype | batch | " + _COLUMNS)
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
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
                    cells = _row(config, batch_size, peaks[dtype][0])
                    print(
                        f"| {preset} ({common.PRESETS[preset][3]}) "
                        f"| {config.data.crop_frames} x {config.features.n_mels} "
                        f"| {'in the step' if inputs == 'device' else 'cached'} "
                        f"| {dtype} | {batch_size} " + cells,
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
