"""Regenerates benchmarks/RESULTS.md: every benchmark, one after another.

  .venv/bin/python -m benchmarks.run_all [--out=benchmarks/RESULTS.md] [--quick]
      [--allocator=auto|tcmalloc|glibc]

Each benchmark runs in its own process (some set XLA_FLAGS before JAX starts)
with the settings below, and its markdown output goes into the file under the
command that made it, after a header with the machine, versions, allocator and
the load average before the run (timings from a busy machine mean nothing).
`torch_reference` needs the optional `bench` extra; without torch its section
says so. `--quick` shrinks every benchmark to check the runner itself.
"""

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", "benchmarks/RESULTS.md", "The file to write.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings: checks the runner only.")
_ALLOCATOR = flags.DEFINE_enum(
    "allocator",
    "auto",
    ["auto", "tcmalloc", "glibc"],
    "Every benchmark process's malloc: tcmalloc (LD_PRELOAD of TCMALLOC, "
    "Debian's libtcmalloc-minimal4), glibc's, or auto (tcmalloc when installed). "
    "glibc returns large buffers to the OS every step, and the page faults cost "
    "both JAX and PyTorch up to 1.5x here.",
)
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"

# (title, module, flags, quick flags).
BENCHMARKS = (
    (
        "train_step: the main job's model (AlexNet width 0.25, five tasks)",
        "benchmarks.train_step",
        ["--batch_sizes=32,64", "--steps=20", "--weightings=equal,uncertainty,pcgrad"],
        ["--batch_sizes=8", "--steps=2", "--weightings=equal"],
    ),
    (
        "train_step: AlexNet and VGG at the CPU-sized and full widths, float32 "
        "and bfloat16",
        "benchmarks.train_step",
        [
            "--models=synthetic,alexnet,vgg11_half,vgg16_half,vgg11,vgg16",
            "--dtypes=float32,bfloat16",
            "--steps=5",
        ],
        [
            "--models=synthetic",
            "--dtypes=float32,bfloat16",
            "--model_batch_sizes=4",
            "--steps=1",
        ],
    ),
    (
        "train_step: log-mels from the cache vs made in the step "
        "(data.features_on_device)",
        "benchmarks.train_step",
        [
            "--models=synthetic,alexnet",
            "--dtypes=float32",
            "--inputs=cache,device",
            "--steps=10",
        ],
        [
            "--models=synthetic",
            "--inputs=cache,device",
            "--model_batch_sizes=4",
            "--steps=1",
        ],
    ),
    (
        "weighting: every weighting method's step time, relative to equal",
        "benchmarks.weighting",
        ["--batch_size=32", "--steps=20"],
        ["--batch_size=8", "--steps=2", "--methods=equal,pcgrad"],
    ),
    (
        "torch_reference: the same models, optimizer and losses in PyTorch",
        "benchmarks.torch_reference",
        ["--steps=10", "--rounds=3"],
        ["--models=synthetic", "--batch_sizes=8", "--steps=2", "--rounds=2"],
    ),
    (
        "max_pool: the pools' gradient, autodiff vs layers.max_pool's VJP",
        "benchmarks.max_pool",
        ["--batch_size=64"],
        ["--batch_size=2", "--repeats=1", "--calls=1"],
    ),
    (
        "conv_layers: each AlexNet conv, forward + backward, by library",
        "benchmarks.conv_layers",
        ["--model=alexnet", "--batch_size=64"],
        ["--model=alexnet", "--batch_size=2", "--repeats=1"],
    ),
    (
        "conv_layers: each VGG-11 (width 0.5) conv, forward + backward, by library",
        "benchmarks.conv_layers",
        ["--model=vgg11_half", "--batch_size=64"],
        ["--model=vgg11_half", "--batch_size=2", "--repeats=1"],
    ),
    (
        "profile_step: where the AlexNet step's time goes (the gap to PyTorch)",
        "benchmarks.profile_step",
        ["--model=alexnet", "--batch_size=64"],
        ["--model=synthetic", "--batch_size=4", "--steps=1", "--top=5"],
    ),
    (
        "features: log-mel clips/s, librosa vs jitted jnp",
        "benchmarks.features",
        [],
        ["--clips=4", "--repeats=1", "--extra_settings="],
    ),
    (
        "input_pipeline: Grain batches/s vs the train step",
        "benchmarks.input_pipeline",
        [],
        ["--workers=0", "--batches=5", "--step_steps=2"],
    ),
    (
        "scaling: weak scaling on forced host devices; two processes vs one",
        "benchmarks.scaling",
        [],
        ["--devices=1,2", "--steps=2", "--two_process_steps=2"],
    ),
)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(env: dict) -> list[str]:
    load = os.getloadavg()
    packages = ("jax", "jaxlib", "flax", "optax", "grain", "librosa", "torch")
    return [
        "# Benchmark results",
        "",
        "Regenerate: `.venv/bin/python -m benchmarks.run_all` (every table below; "
        "the commands are under each title). Compare figures within one run only: "
        "this machine drifts 5-10% between runs.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.system()} {platform.release()}",
        f"- load average before the run: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)",
        f"- allocator (every benchmark, both frameworks): "
        f"LD_PRELOAD={env.get('LD_PRELOAD') or 'none (glibc malloc)'}",
        f"- XLA_FLAGS={os.environ.get('XLA_FLAGS') or 'none'}",
        "- " + ", ".join(f"{p} {_version(p)}" for p in packages),
        "",
    ]


def allocator_env(choice: str) -> dict:
    """The benchmark processes' environment for the --allocator choice."""
    env = dict(os.environ)
    if choice == "glibc":
        env.pop("LD_PRELOAD", None)
        return env
    if choice == "tcmalloc" and not os.path.exists(TCMALLOC):
        sys.exit(
            f"--allocator=tcmalloc: {TCMALLOC} not found "
            "(apt install libtcmalloc-minimal4)"
        )
    if os.path.exists(TCMALLOC):
        env["LD_PRELOAD"] = TCMALLOC
    return env


def run_one(module: str, args: list[str], env=None) -> tuple[str, float, int]:
    """Runs a benchmark module; returns (its stdout, wall seconds, exit status)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
    )
    out = done.stdout
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        out += f"\n**Failed with exit status {done.returncode}:**\n\n```\n{tail}\n```\n"
    return out, time.perf_counter() - start, done.returncode


def main(argv):
    del argv
    env = allocator_env(_ALLOCATOR.value)
    lines = header(env)
    failed = []
    total = time.perf_counter()
    for title, module, args, quick in BENCHMARKS:
        args = quick if _QUICK.value else args
        command = f"python -m {module} {' '.join(args)}".strip()
        print(f"{command} ...", flush=True)
        lines += [f"## {title}", "", f"`{command}`", ""]
        if module.endswith("torch_reference") and not importlib.util.find_spec("torch"):
            lines += [
                "Not run: torch is not installed (the optional `bench` extra; "
                "install the CPU build of torch==2.13.0 first).",
                "",
            ]
            continue
        out, seconds, status = run_one(module, args, env)
        if status:
            failed.append(module)
        lines += [out.strip(), "", f"({seconds:.0f} s)", ""]
    minutes = (time.perf_counter() - total) / 60
    lines.insert(2, f"Whole run: {minutes:.1f} min.\n")
    with open(_OUT.value, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"Wrote {_OUT.value} in {minutes:.1f} min")
    if failed:
        sys.exit(f"Failed: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
