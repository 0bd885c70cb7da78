"""The accelerator benchmark: one command, about 9 minutes on one GPU.

  python -m benchmarks.accelerator [--out=benchmarks/RESULTS_accelerator.md]
      [--budget_s=540] [--quick]

Writes `--out` (and rewrites it after every part, so that a run cut short
keeps what it finished) with these parts, the most important first, each in its
own process under its own time limit (its share of `--budget_s`):
  1. main_job: the main job end to end (configs/synthetic.py), host batches
     and the device cache at batch 32, and the device cache at batch 256, each
     run's logged step time against its pure step (goal: within 1.2x);
  2. torch_reference: VGG-16 + BN, then AlexNet (full width, input 256 x 128,
     batch 256) in bfloat16 and float32: our step with its model FLOPs and MFU
     (the chip's datasheet peak), against the same model in PyTorch, eager and
     torch.compile (goals: VGG-16 bf16 at 45% MFU, ours/torch >= 1.0);
  3. train_step: the main job's model at batch 32 and 256, both dtypes;
  4. input_pipeline: the host pipelines (0 and 8 workers) and the device
     store's, against the step consumption of three models;
  5. accelerator_config: configs/accelerator.py (AlexNet, bfloat16, batch 256,
     device cache) end to end.
`--quick` shrinks every part to check the runner on a CPU. Needs torch for
part 2 (the GPU images have it); `--device=cuda` there.
"""

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", "benchmarks/RESULTS_accelerator.md", "The file.")
_BUDGET = flags.DEFINE_integer("budget_s", 540, "Seconds for all the parts.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings: checks the runner only.")

# (title, module, flags, quick flags, share of the budget).
_MAIN_JOB_SET = "--set=report.figures=False"  # The report's figures are CPU work.
_TORCH = ["--device=cuda", "--input=issue", "--batch_sizes=256", "--check=false"]
_TORCH_QUICK = ["--models=synthetic", "--batch_sizes=4", "--check=false", "--steps=1"]
PARTS = (
    (
        "main_job: the main job end to end, logged step vs pure step",
        "benchmarks.main_job",
        [
            "--variants=host b32=;device cache b32=data.device_cache=True;"
            "device cache b256=data.batch_size=256,data.device_cache=True",
            _MAIN_JOB_SET,
        ],
        [
            "--variants=host=;device cache=data.device_cache=True",
            _MAIN_JOB_SET + ",train.num_steps=20,train.eval_every=10,"
            "train.checkpoint_every=10,corpus.utterances_per_speaker=8",
            "--step_steps=2",
        ],
        0.23,
    ),
    (
        "torch_reference: full-width VGG-16 + BN, ours vs PyTorch, MFU",
        "benchmarks.torch_reference",
        [*_TORCH, "--models=vgg16", "--dtypes=bfloat16,float32", "--steps=20"],
        _TORCH_QUICK,
        0.35,
    ),
    (
        "torch_reference: full-width AlexNet, ours vs PyTorch, MFU",
        "benchmarks.torch_reference",
        [*_TORCH, "--models=alexnet", "--dtypes=bfloat16,float32", "--steps=30"],
        _TORCH_QUICK,
        0.15,
    ),
    (
        "train_step: the main job's model, float32 and bfloat16",
        "benchmarks.train_step",
        [
            "--models=synthetic",
            "--dtypes=float32,bfloat16",
            "--model_batch_sizes=32,256",
            "--steps=50",
        ],
        ["--models=synthetic", "--model_batch_sizes=4", "--steps=1"],
        0.07,
    ),
    (
        "input_pipeline: host batches and the device store against the step",
        "benchmarks.input_pipeline",
        [
            "--batch_size=256",
            "--workers=0,8",
            "--read_threads=1",
            "--batches=300",
        ],
        ["--batch_size=16", "--workers=0", "--batches=3", "--step_steps=1"],
        0.06,
    ),
    (
        "max_pool: VGG-16's and AlexNet's pools, ours vs autodiff vs reduce-window",
        "benchmarks.max_pool",
        ["--models=vgg16,alexnet", "--batch_size=256", "--dtype=bfloat16"],
        ["--models=alexnet", "--batch_size=2", "--repeats=1", "--calls=1"],
        0.04,
    ),
    (
        "accelerator_config: configs/accelerator.py end to end",
        "benchmarks.main_job",
        [
            "--config=configs/accelerator.py",
            "--variants=AlexNet bf16 b256=",
            _MAIN_JOB_SET,
        ],
        [
            "--config=configs/accelerator.py:smoke",
            "--variants=smoke=",
            "--step_steps=1",
        ],
        0.10,
    ),
)

_DEVICES = (
    "import jax; d = jax.devices(); "
    "print(f'{len(d)} x {d[0].device_kind} ({jax.default_backend()})')"
)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header() -> list[str]:
    # In a process of its own: the parent must not take the accelerator's
    # memory (JAX preallocates it) from the parts.
    devices = subprocess.run(
        [sys.executable, "-c", _DEVICES], capture_output=True, text=True
    ).stdout.strip()
    packages = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")
    return [
        "# Accelerator benchmark results",
        "",
        "Regenerate: `python -m benchmarks.accelerator` on the accelerator "
        "(docs/accelerators.md); the command of each table is under its "
        "title. Compare figures within one run only.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- commit: {os.environ.get('MTL_SER_COMMIT', 'unknown')}",
        f"- devices: {devices}; host: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; python {platform.python_version()}",
        "- " + ", ".join(f"{p} {_version(p)}" for p in (*packages, "torch")),
        "",
    ]


def run_part(module: str, args: list[str], timeout_s: float) -> tuple:
    """(stdout, seconds, note) of one part; the note says how it failed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        note = f"**Stopped at its time limit of {timeout_s:.0f} s.**"
        return out, time.perf_counter() - start, note
    note = ""
    if done.returncode:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        note = f"**Failed with exit status {done.returncode}:**\n\n```\n{tail}\n```"
    return done.stdout, time.perf_counter() - start, note


def main(argv):
    del argv
    lines, failed = header(), []
    begin = time.perf_counter()
    for title, module, args, quick, share in PARTS:
        args = quick if _QUICK.value else args
        left = _BUDGET.value - (time.perf_counter() - begin)
        limit = min(max(share * _BUDGET.value, 30.0), left)
        command = f"python -m {module} {' '.join(args)}".strip()
        lines += [f"## {title}", "", f"`{command}`", ""]
        if limit < 30:
            lines += ["Not run: the budget was spent.", ""]
            continue
        print(f"{command} (up to {limit:.0f} s) ...", flush=True)
        out, seconds, note = run_part(module, args, limit)
        if note:
            failed.append(module)
        lines += [out.strip(), note, f"({seconds:.0f} s)", ""]
        with open(_OUT.value, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(out.strip(), note, sep="\n", flush=True)
    minutes = (time.perf_counter() - begin) / 60
    lines.insert(2, f"Whole run: {minutes:.1f} min.\n")
    with open(_OUT.value, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"Wrote {_OUT.value} in {minutes:.1f} min")
    if failed:
        sys.exit(f"Failed or cut short: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
