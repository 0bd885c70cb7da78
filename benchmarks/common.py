"""What the benchmarks share: model presets, loading a config, timing its step."""

import dataclasses
import importlib.util
import os
import statistics
import time
from typing import Any

import jax
import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import features
from mtl_ser.training import build, sharding
from mtl_ser.training import state as state_lib

# name -> (config file, overrides, default batch sizes, description)
PRESETS = {
    "synthetic": (
        "configs/synthetic.py",
        {},
        (32,),
        "main job: AlexNet w0.25, FC 512",
    ),
    "alexnet": (
        "configs/synthetic.py",
        {"model.width": 1.0, "model.hidden": 1024},
        (16, 64),
        "AlexNet w1, FC 1024",
    ),
    "vgg11_half": (
        "configs/vgg_mtl.py",
        {"model.width": 0.5, "model.hidden": 2048},
        (16, 64),
        "VGG-11 w0.5 + BN, FC 1024",
    ),
    "vgg16_half": (
        "configs/vgg_mtl.py",
        {"model.name": "vgg16", "model.width": 0.5, "model.hidden": 2048},
        (16,),
        "VGG-16 w0.5 + BN, FC 1024",
    ),
    "vgg11": (
        "configs/vgg_mtl.py",
        {"model.width": 1.0, "model.hidden": 1024},
        (16,),
        "VGG-11 w1 + BN, FC 1024",
    ),
    "vgg16": (
        "configs/vgg_mtl.py",
        {"model.name": "vgg16", "model.width": 1.0, "model.hidden": 1024},
        (16,),
        "VGG-16 w1 + BN, FC 1024",
    ),
}
# (crop_frames T, n_mels F) of each --input; "issue" is issue 5's 1 x 128 mels
# x 256 frames, our layout [B, 256, 128, 1].
INPUTS = {"config": None, "issue": (256, 128)}


def load_config(path):
    """Loads `file.py` or `file.py:arg` as launch.py's --config does."""
    file, _, arg = path.partition(":")
    spec = importlib.util.spec_from_file_location("bench_config", file)
    if spec is None or spec.loader is None or not os.path.isfile(file):
        raise FileNotFoundError(f"--config={path}: {file} is not a config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _random_batch(tasks, batch_size, frames, mels, rng):
    labels, masks = {}, {}
    for t in tasks:
        if t.kind == tasks_lib.CLASSIFICATION:
            labels[t.name] = rng.integers(0, len(t.classes), batch_size, np.int32)
        else:
            labels[t.name] = rng.normal(size=batch_size).astype(np.float32)
        masks[t.name] = np.ones(batch_size, np.float32)
    x = rng.normal(size=(batch_size, frames, mels, 1)).astype(np.float32)
    return {"x": x, "labels": labels, "masks": masks}


def _audio_batch(batch, config, rng):
    """`batch` with random crop audio instead of "x" (data.features_on_device)."""
    f, size = config.features, len(batch["x"])
    samples = features.crop_num_samples(config.data.crop_frames, f.n_fft, f.hop_length)
    out = {k: v for k, v in batch.items() if k != "x"}
    out["audio"] = (0.1 * rng.normal(size=(size, samples))).astype(np.float32)
    out["peak_db"] = np.zeros(size, np.float32)
    out["floor_db"] = np.full(size, -80.0, np.float32)
    out["frames"] = np.full(size, config.data.crop_frames, np.int32)
    out["real"] = np.tile(np.array([[0, samples]], np.int32), (size, 1))
    return out


@dataclasses.dataclass
class CompiledStep:
    """A compiled train step with its state and one random batch, ready to time."""

    step: Any
    state: Any
    batch: Any
    batch_size: int
    compile_s: float
    flops: float
    temp_mib: float
    params: int


def compile_step(config, batch_size: int, method=None) -> CompiledStep:
    """Compiles the train step of `config` at `batch_size`.

    `method` replaces the configured weighting method when given. The step
    gets random log-mel crops and normalises them (band statistics 0 and 1),
    as in training; with `config.data.features_on_device`, random audio crops
    whose log-mels it makes itself.
    """
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    mesh = sharding.make_mesh()
    mels = c.features.n_mels
    stats = (np.zeros(mels, np.float32), np.ones(mels, np.float32))
    steps = build.build_steps(c, tasks, mesh, method=method, stats=stats)
    rng = np.random.default_rng(0)
    batch = _random_batch(tasks, batch_size, c.data.crop_frames, mels, rng)
    if c.data.features_on_device:
        batch = _audio_batch(batch, c, rng)
    else:  # Log-mel crops, which the step normalises as in training.
        batch["db"] = batch.pop("x")[..., 0]
    batch = sharding.from_process_local(batch, mesh)
    start = time.perf_counter()
    compiled = steps.train_fn.lower(steps.state, batch, None).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    return CompiledStep(
        step=compiled,
        state=steps.state,
        batch=batch,
        batch_size=batch_size,
        compile_s=compile_s,
        flops=float(cost.get("flops", 0.0)) if cost else 0.0,
        temp_mib=(getattr(memory, "temp_size_in_bytes", 0) if memory else 0) / 2**20,
        params=state_lib.param_count(steps.state.params["model"]),
    )


def time_step(run: CompiledStep, num_steps: int, warmup: int = 3) -> float:
    """The median seconds of `num_steps` steps after `warmup` (each step
    waited for); the state moves on, so a second call continues training."""
    times = []
    for i in range(num_steps + warmup):
        start = time.perf_counter()
        run.state, metrics = run.step(run.state, run.batch, None)
        jax.block_until_ready((run.state, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(config, batch_size: int, num_steps: int, method=None) -> dict:
    """Compiles and times the train step of `config` at `batch_size`
    (`compile_step`, then `time_step`)."""
    run = compile_step(config, batch_size, method)
    step_s = time_step(run, num_steps)
    return {
        "compile_s": run.compile_s,
        "step_ms": 1e3 * step_s,
        "samples_per_s": batch_size / step_s,
        "gflop_per_s": run.flops / step_s / 1e9,
        "temp_mib": run.temp_mib,
        "params": run.params,
    }


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype="float32") -> float:
    """The backend's GEMM rate: a jitted [n, n] @ [n, n] in `dtype`, median of runs.

    The reference "peak" of this run: achieved GFLOP/s of a train step are
    reported as a fraction of it, so both come from the same backend, threads
    and allocator.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), jax.numpy.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
    jax.block_until_ready(matmul(a, a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def make_config(preset: str, input_kind: str = "config"):
    """The config of a preset, with `input_kind`'s input size."""
    if preset not in PRESETS:
        raise ValueError(f"--models: unknown {preset!r}; choose from {list(PRESETS)}")
    path, overrides, _, _ = PRESETS[preset]
    config = load_config(path)
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    if INPUTS[input_kind] is not None:
        config.data.crop_frames, config.features.n_mels = INPUTS[input_kind]
    if config.model.dtype != "float32":
        raise ValueError("model.dtype: the torch twin is float32 only")
    return config
