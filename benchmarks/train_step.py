"""Train-step throughput of a config's model on random input (no data pipeline).

  .venv/bin/python -m benchmarks.train_step --config=configs/synthetic.py \
      --batch_sizes=32,64 --steps=20

Reports AOT compile time, median step time over `steps` timed steps after 3
warm-up steps (block_until_ready each step), samples/s, XLA's FLOP estimate as
achieved GFLOP/s and as a fraction of the float32 matmul rate measured at the
start of the same run, and the compiled program's temp memory. Compare figures only
within one run: this machine drifts 5-10% between runs.
"""

import jax
from absl import app, flags

from benchmarks import common

_CONFIG = flags.DEFINE_string("config", "configs/synthetic.py", "Config file.")
_BATCHES = flags.DEFINE_string("batch_sizes", "32", "Comma-separated global batches.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per setting.")
_WEIGHTINGS = flags.DEFINE_string(
    "weightings", "equal,uncertainty", "Comma-separated weighting methods."
)


def main(argv):
    del argv
    config = common.load_config(_CONFIG.value)
    peak = common.matmul_peak_gflops()
    print(
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"model {config.model.name} width {config.model.width}, "
        f"input [B, {config.data.crop_frames}, {config.features.n_mels}, 1], "
        f"{config.model.dtype}, {config.optim.name}; matmul peak {peak:.0f} GFLOP/s"
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
            print(
                f"| {name} | {batch_size} | {r['compile_s']:.1f} | {r['step_ms']:.1f} "
                f"| {r['samples_per_s']:.0f} | {r['gflop_per_s']:.1f} "
                f"| {r['gflop_per_s'] / peak:.2f} "
                f"| {r['temp_mib']:.0f} | {r['params']:,} |",
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
