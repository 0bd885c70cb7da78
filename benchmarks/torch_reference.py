"""Our train step against the identical model trained by PyTorch, in one run.

  .venv/bin/python -m benchmarks.torch_reference                  # default models
  .venv/bin/python -m benchmarks.torch_reference --check_only     # identity only
  .venv/bin/python -m benchmarks.torch_reference --models=alexnet \
      --batch_sizes=16,64 --steps=30 --input=issue
  # One GPU (ours on JAX's GPU backend, torch on CUDA), eager and compiled:
  CUDA_VISIBLE_DEVICES=0 python -m benchmarks.torch_reference --device=cuda \
      --dtypes=float32,bfloat16 --models=alexnet,vgg11 --batch_sizes=64,256

Needs the optional `bench` extra (torch 2.13.0; its CPU build, or a CUDA build
for --device=cuda); mtl_ser itself never imports torch. For each model preset
the PyTorch twin (`benchmarks/torch_models.py`) is built from the same config
and proven the same before anything is timed (`check_identity`, which raises
`IdentityError`, so no ratio is printed for a twin that differs): equal
parameter counts; equal convolution + matmul FLOPs, forward and per train step
(ours counted from the jaxpr, `benchmarks/flops.py`, torch's by
`FlopCounterMode`); with our parameters copied across, equal eval outputs and
training-mode losses and gradients; and the same optimizer updates (clipping,
Adam, schedule) from the same gradients. The check runs torch on the CPU
(float64 where it says so) and ours on JAX's default backend at "highest"
matmul precision, whatever --device; --check=false skips it.

Then, per compute dtype and batch size, our jitted train step
(`benchmarks.common.measure`: AOT compile, median of `steps` after 3 warm-up
steps, `block_until_ready`) and the torch step (channels_last, fused Adam,
grad clipping and the learning-rate schedule as configured, median after the
same warm-up, synchronized each step on CUDA) are timed one after the other,
and the table gives ours / torch. Both start from our initial parameters on
the same random batch. The dtypes (--dtypes) set both sides: float32 (on a GPU
both sides compute convolutions and matmuls in TF32, JAX's default and torch's
with `allow_tf32`), or bfloat16: our `model.dtype` (float32 parameters and
optimizer) and torch's `autocast(bfloat16)` over the forward and losses
(float32 parameters, gradients and Adam). With --torch_compile (default on
CUDA) a second torch column times the same step with `torch.compile` of what a
PyTorch user compiles for training: the loss function (forward, task losses,
weighting), whose backward AOTAutograd compiles with it; the optimizer stays
eager, as fused Adam is one kernel already and its LambdaLR learning rate,
a Python float that changes every step, would recompile a compiled `step()`.
MFU columns divide the model FLOPs per step (`flops.train_step_flops`, equal on
both sides) by step time and the dtype's peak (`flops.peak_flops`: the chip's
datasheet figure, or the matmul rate measured now). The timings mean something
only on a quiet machine: the header prints the load average.
"""

import copy
import functools
import math
import os
import platform
import statistics
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from absl import app, flags
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common, flops
from benchmarks import torch_models as tm
from benchmarks.common import INPUTS, PRESETS, make_config
from configs import default as default_config
from mtl_ser import tasks as tasks_lib
from mtl_ser import weighting as weighting_lib
from mtl_ser.training import build, optim, sharding
from mtl_ser.training import state as state_lib

_WARMUP = 3  # As benchmarks.common.measure.
# Environment that changes either side's speed, printed in the header.
_ENV = ("LD_PRELOAD", "XLA_FLAGS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")

_MODELS = flags.DEFINE_string(
    "models", "synthetic,alexnet,vgg11_half", f"Comma-separated of {list(PRESETS)}."
)
_BATCHES = flags.DEFINE_string(
    "batch_sizes", "", "Comma-separated batches for every model; empty: presets'."
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per setting, side and round.")
_ROUNDS = flags.DEFINE_integer(
    "rounds",
    1,
    "Rounds per setting, each timing ours then torch; the ratio is of the "
    "per-side medians over rounds (the machine drifts 5-10% from minute to minute).",
)
_INPUT = flags.DEFINE_enum(
    "input", "config", list(INPUTS), "Input size: the config's or issue 5's."
)
_CHECK_ONLY = flags.DEFINE_bool("check_only", False, "Run the identity checks only.")
_CHECK_BATCH = flags.DEFINE_integer("check_batch", 4, "Batch of the identity check.")
_RTOL = flags.DEFINE_float("rtol", 1e-4, "Relative tolerance of the identity check.")
_THREADS = flags.DEFINE_integer("threads", 0, "torch threads; 0: every usable core.")
_DEVICE = flags.DEFINE_enum(
    "device",
    "cpu",
    ["cpu", "cuda"],
    "Where torch trains; ours trains on JAX's default backend, which must be the "
    "GPU for cuda.",
)
_DTYPES = flags.DEFINE_string(
    "dtypes",
    "float32",
    "Comma-separated compute dtypes (float32, bfloat16): our model.dtype and "
    "torch's autocast dtype together.",
)
_CHECK = flags.DEFINE_bool(
    "check", True, "Prove each twin identical (check_identity) before timing it."
)
_COMPILE = flags.DEFINE_bool(
    "torch_compile",
    None,
    "Also time the torch step with torch.compile; default: only with --device=cuda "
    "(on a CPU, inductor's C++ compiles take minutes per setting).",
)
_COMPILE_MODE = flags.DEFINE_string(
    "compile_mode", "default", "torch.compile's mode, e.g. 'max-autotune'."
)


class IdentityError(AssertionError):
    """The torch twin is not the same function as our model."""


# ---------------------------------------------------------------- FLOPs


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _torch_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ---------------------------------------------------------------- identity


def _perturbed(tree, rng):
    """Every leaf moved off its init (zero biases, unit BN scales) at its scale.

    Copying zeros or ones proves nothing about layouts; random values do.
    """

    def move(path, x):
        x = np.asarray(x, np.float32)
        if getattr(path[-1], "key", "") == "var":  # BatchNorm running variance
            return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
        scale = float(x.std()) if x.size > 1 and x.std() > 0 else 0.1
        return (x + scale * rng.normal(size=x.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(move, tree)


def _rel(ours, theirs) -> float:
    """max |ours - theirs| / max |ours|."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-30))


def _worst_norm_error(ours: dict, theirs: dict, skip=()) -> float:
    """max over tensors of ||ours - theirs|| / ||ours|| (same keys), bar `skip`."""
    worst = 0.0
    for name, value in ours.items():
        if name in skip:
            continue
        a = np.asarray(value, np.float64).ravel()
        b = np.asarray(theirs[name], np.float64).ravel()
        worst = max(worst, float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)))
    return worst


def _named(twin, model_tree, log_var=None) -> dict:
    """Our model-shaped tree (params, grads) by twin parameter name, numpy."""
    named = {n: v.numpy() for n, v in tm.to_torch_params(twin, model_tree).items()}
    if log_var is not None:
        named["weighting.log_var"] = np.asarray(log_var)
    return named


def _twin_named(twin, weighting, grads: bool = False) -> dict:
    named = dict(twin.named_parameters())
    if hasattr(weighting, "log_var"):
        named["weighting.log_var"] = weighting.log_var
    return {
        n: (p.grad if grads else p).detach().numpy().copy() for n, p in named.items()
    }


def _bias_before_bn(twin) -> set:
    """Conv biases followed by BatchNorm: no effect on train-mode outputs.

    Their exact gradient is zero (BN subtracts the batch mean), so both sides
    hold rounding noise there: the gradient check requires it to be negligible
    instead of comparing noise with noise.
    """
    if not twin.trunk.batch_norm:
        return set()
    names = (n for n, _ in twin.named_parameters())
    return {n for n in names if n.startswith("trunk.conv") and n.endswith(".bias")}


def _check_outputs(model, twin, variables, batch, tasks) -> dict:
    """Relative errors of the eval-mode embedding and every task output."""
    outputs, embedding = model.apply(variables, batch["x"], train=False)
    twin.eval()
    with torch.no_grad():
        x = tm.to_torch_batch(batch)["x"]
        twin_embedding = twin.trunk(x)
        twin_outputs = {n: h(twin_embedding) for n, h in twin.heads.items()}
    errors = {"eval/embedding": _rel(embedding, twin_embedding.numpy())}
    for t in tasks:
        errors[f"eval/{t.name}"] = _rel(outputs[t.name], twin_outputs[t.name].numpy())
    return errors


def _check_grads(check, params, batch_stats, batch, tbatch, twin, weighting):
    """Gradients of the weighted total loss (train mode), both in float64.

    Ours: the loss-based path of our train step (model, `loss_vector`, the
    weighting method's `combine`) differentiated by JAX, with the trunk
    computing in float64 (`dtype`; the heads stay float32, as they always
    are). In float32 the two sides may route a max-pool's gradient to
    different elements where two window values are closer than the rounding
    (or a ReLU input is that close to 0), and the difference spreads to every
    layer below: up to 4e-3 relative was seen. In float64 that never happens.
    """
    tasks, method = check["tasks"], check["method"]
    model = check["model"].clone(trunk=check["model"].trunk.clone(dtype=jnp.float64))
    mutable = ["batch_stats"] if batch_stats else False
    with jax.enable_x64(True):
        params = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
        extra = {"batch_stats": batch_stats} if batch_stats else {}
        x = np.asarray(batch["x"], np.float64)

        def total_fn(p):
            result = model.apply(
                {"params": p["model"], **extra}, x, train=True, mutable=mutable
            )
            outputs = result[0][0] if mutable else result[0]
            losses = tasks_lib.loss_vector(
                tasks, outputs, batch["labels"], batch["masks"]
            )
            total, _, _ = method.combine(
                p["weighting"],
                check["weighting_state"],
                losses,
                step=jnp.zeros((), jnp.int32),
                rng=jax.random.key(0),
            )
            return total

        total, grads = jax.value_and_grad(total_fn)(params)
        grads = jax.device_get(grads)
    twin, weighting = copy.deepcopy(twin).double().train(), copy.deepcopy(weighting)
    weighting = weighting.double()
    twin_total = weighting(tm.task_losses(twin, tasks, tm.to_float64(tbatch)))
    twin_total.backward()
    ours = _named(twin, grads["model"], grads["weighting"].get("log_var"))
    theirs = _twin_named(twin, weighting, True)
    dead = _bias_before_bn(twin)
    errors = {
        "train/loss": _rel(total, twin_total.detach().numpy()),
        "train/grads": _worst_norm_error(ours, theirs, skip=dead),
    }
    if dead:
        scale = math.sqrt(sum(float(np.sum(np.square(g))) for g in ours.values()))
        largest = max(
            float(np.linalg.norm(side[n])) for n in dead for side in (ours, theirs)
        )
        errors["train/grads_bias_before_bn"] = largest / scale
    return errors


def _check_flops(steps, state, batch, twin, step, tbatch) -> dict:
    """Conv + matmul FLOPs of both sides, and XLA's totals, at the check batch."""
    variables = {"params": state.params["model"]}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    forward = functools.partial(steps.model.apply, train=False)
    jaxprs = {
        "forward": jax.make_jaxpr(forward)(variables, batch["x"]),
        "train": steps.train_fn.trace(state, batch, None).jaxpr,
    }
    counts = {
        "xla_forward": _xla_flops(
            jax.jit(forward).lower(variables, batch["x"]).compile()
        ),
        "xla_train": _xla_flops(steps.train_fn.lower(state, batch, None).compile()),
    }
    for part, jaxpr in jaxprs.items():
        counts[f"ours_{part}"] = flops.matmul_flops(jaxpr, "torch")
        counts[f"valid_{part}"] = flops.matmul_flops(jaxpr, "xla")
    twin.eval()
    with torch.no_grad():
        counts["torch_forward"] = _torch_flops(lambda: twin(tbatch["x"]))
    twin.train()
    counts["torch_train"] = _torch_flops(
        lambda: step.weighting(step.losses(tbatch)).backward()
    )
    step.opt.zero_grad(set_to_none=True)
    return counts


# Global gradient norms of the optimizer check's steps, in units of the clipping
# threshold: below and above it, so the clip factor differs from step to step.
_GRAD_NORMS = (0.5, 5.0, 2.0, 0.2, 8.0, 1.5, 0.7, 3.0)


def _check_optimizer(config, params, twin, weighting, tasks, rng):
    """Updates of optimizer steps on the same random gradients, one per norm.

    Ours: `optim.make_optimizer` (clipping, Adam, the schedule); the twin's:
    `TrainStep.update`. The gradients are random, with global norms below and
    above the clipping threshold, so the clip factor changes from step to step
    and the comparison does not hinge on any model's rounding. Parameters
    start at 0 (Adam never reads them), so the updates are not lost in the
    parameters' rounding. Both run in float64: in float32, optax's bias
    correction 1 - 0.999^t loses about four digits at small t, a 1e-5 to 1e-4
    difference from torch's.
    """
    twin = copy.deepcopy(twin).double()
    weighting = copy.deepcopy(weighting).double()
    named_params = dict(twin.named_parameters())
    if hasattr(weighting, "log_var"):
        named_params["weighting.log_var"] = weighting.log_var
    with torch.no_grad():
        for p in named_params.values():
            p.zero_()
    step = tm.TrainStep(twin, weighting, tasks, config)
    clip = config.optim.grad_clip or 1.0
    with jax.enable_x64(True):
        tx = optim.make_optimizer(config.optim, config.train.num_steps)
        ours = jax.tree.map(lambda x: np.zeros(np.shape(x), np.float64), params)
        opt_state = tx.init(ours)
        for norm in _GRAD_NORMS:
            grads = jax.tree.map(lambda x: rng.normal(size=np.shape(x)), params)
            total = math.sqrt(sum(float(np.sum(g * g)) for g in jax.tree.leaves(grads)))
            grads = jax.tree.map(lambda g, s=norm * clip / total: g * s, grads)
            updates, opt_state = tx.update(grads, opt_state, ours)
            ours = optax.apply_updates(ours, updates)
            named = _named(twin, grads["model"], grads["weighting"].get("log_var"))
            for name, p in named_params.items():
                p.grad = torch.from_numpy(named[name]).to(memory_format=_format(p))
            step.update()
        ours = jax.device_get(ours)
    ours = _named(twin, ours["model"], ours["weighting"].get("log_var"))
    theirs = _twin_named(twin, weighting)
    return {"optimizer/update": _worst_norm_error(ours, theirs)}


def _format(p):
    """The memory format of a parameter (channels_last conv kernels)."""
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _check_schedule(optim_cfg, num_steps: int) -> float:
    """Largest relative difference of the twin's learning rate from optax's."""
    schedule = optim.make_schedule(optim_cfg, num_steps)
    warmup = optim_cfg.warmup_steps
    probes = {0, 1, warmup - 1, warmup, warmup + 1, num_steps // 2, num_steps - 1}
    ours = [float(schedule(s)) for s in sorted(p for p in probes if p >= 0)]
    twin = [
        tm.learning_rate(optim_cfg, num_steps, s)
        for s in sorted(p for p in probes if p >= 0)
    ]
    return _rel(ours, twin)


def check_identity(config, *, batch_size: int = 4, rtol: float = 1e-4, seed: int = 0):
    """Proves the torch twin of `config`'s model is our model.

    Our parameters and BatchNorm statistics, moved off their init by random
    noise (so zero biases and unit scales cannot hide a layout error), are
    copied into the twin. Checks (dropout off where outputs are compared: the
    two sides draw different masks):
      - parameter counts equal;
      - conv + matmul FLOPs equal, forward and per train step (torch's
        counting convention; see `flops.matmul_flops`);
      - eval outputs (embedding and every head): max abs difference over max
        abs value within `rtol`;
      - train mode, in float64 (see `_check_grads`): the weighted total loss
        within `rtol`, every parameter's gradient within `rtol` (relative
        norm); conv biases before BatchNorm, whose exact gradient is 0, below
        `rtol` x the gradient's norm on both sides;
      - the optimizer, in float64 (see `_check_optimizer`): eight steps of
        both on the same random gradients (clipping, Adam, the config's
        schedule) give every parameter's update within `rtol` (relative norm);
        the schedule equals optax's within `rtol`.

    Args:
        config: the experiment config (not modified).
        batch_size: the check's batch.
        rtol: tolerance.
        seed: numpy seed of the perturbation, the batch and the gradients.

    Returns:
        A report dict: "params", "flops" (per sample), "errors", "adam" (the
        torch Adam variant), "init" (our initial host params and batch_stats,
        for timing the twin).

    Raises:
        IdentityError: listing every failed check.
    """
    tasks = tasks_lib.make_tasks(
        config.tasks, config.emotion_classes, config.regression_loss
    )
    mesh = sharding.make_mesh()
    steps = build.build_steps(config, tasks, mesh)
    init = jax.device_get((steps.state.params, steps.state.batch_stats))
    rng = np.random.default_rng(seed)
    params, batch_stats = _perturbed(init, rng)
    state = jax.device_put(
        steps.state.replace(params=params, batch_stats=batch_stats),
        steps.state_sharding,
    )
    batch = common._random_batch(
        tasks, batch_size, config.data.crop_frames, config.features.n_mels, rng
    )
    no_dropout = copy.deepcopy(config)
    no_dropout.model.dropout = 0.0
    twin = tm.make_model(no_dropout.model, tasks)
    tm.load_flax_params(twin, params["model"], batch_stats)
    twin = twin.to(memory_format=torch.channels_last)
    weighting = tm.Weighting(
        config.weighting, tasks, params["weighting"].get("log_var")
    )
    step = tm.TrainStep(twin, weighting, tasks, config)
    tbatch = tm.to_torch_batch(batch)
    model = steps.model.clone(trunk=steps.model.trunk.clone(dropout=0.0))
    check = {
        "model": model,
        "tasks": tasks,
        "method": weighting_lib.make_method(config.weighting, tasks),
        "weighting_state": steps.state.weighting_state,
    }

    variables = {"params": params["model"]}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    # Float32 against float32: on a GPU JAX's default precision computes float32
    # convolutions and dots in TF32 (1e-3 relative), the twin here in float32.
    with jax.default_matmul_precision("highest"):
        errors = _check_outputs(model, twin, variables, batch, tasks)
    errors.update(
        _check_grads(check, params, batch_stats, batch, tbatch, twin, weighting)
    )
    device_batch = sharding.from_process_local(batch, mesh)
    flop_counts = _check_flops(steps, state, device_batch, twin, step, tbatch)
    errors.update(_check_optimizer(config, params, twin, weighting, tasks, rng))
    errors["schedule"] = _check_schedule(config.optim, config.train.num_steps)

    counts = {
        "ours": state_lib.param_count(params["model"]),
        "torch": sum(p.numel() for p in twin.parameters()),
    }
    failures = []
    if counts["ours"] != counts["torch"]:
        failures.append(f"parameters: ours {counts['ours']}, torch {counts['torch']}")
    for part in ("forward", "train"):
        ours, theirs = flop_counts[f"ours_{part}"], flop_counts[f"torch_{part}"]
        if ours != theirs:
            failures.append(f"{part} conv+matmul FLOPs: ours {ours} torch {theirs}")
    for name, error in errors.items():
        if not error <= rtol:  # Also catches NaN.
            failures.append(f"{name}: relative error {error:.2e} > {rtol:.0e}")
    if failures:
        raise IdentityError(
            f"{config.model.name} twin differs from ours: " + "; ".join(failures)
        )
    return {
        "params": counts["ours"],
        "flops": {k: v / batch_size for k, v in flop_counts.items()},
        "errors": errors,
        "adam": step.adam,
        "init": init,
    }


# ---------------------------------------------------------------- timing


def _initial_params(config):
    """Our initial host (params, batch_stats) of `config`, as the step starts."""
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    steps = build.build_steps(c, tasks, sharding.make_mesh())
    return jax.device_get((steps.state.params, steps.state.batch_stats))


def _to_device(batch: dict, device: str) -> dict:
    """A `to_torch_batch` batch on `device` (x stays channels_last)."""
    return jax.tree.map(lambda t: t.to(device), batch)


def time_torch(
    config,
    init,
    batch_size: int,
    num_steps: int,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    compile_mode=None,
) -> dict:
    """Median torch train step of the twin started from our initial params.

    One step: zero the gradients, the weighted total loss (forward, task
    losses, weighting), backward, clip, fused Adam, schedule; then, on CUDA,
    `torch.cuda.synchronize()` before the clock is read, as our side blocks on
    its step's outputs.

    Args:
        config: the experiment config.
        init: our host (params, batch_stats), as `check_identity` returns.
        batch_size: global batch.
        num_steps: timed steps, after `_WARMUP` untimed ones (which also hold
            torch.compile's compilation and cuDNN's autotuning).
        device: "cpu" or "cuda": where the twin, its optimizer and the batch are.
        dtype: "float32"; or "bfloat16": the forward and task losses under
            `torch.autocast(device, bfloat16)`, with float32 parameters,
            gradients and Adam.
        compile_mode: None: eager; else `torch.compile`'s mode for the loss
            function (the module docstring says why that and not the step).

    Returns:
        {"step_ms", "samples_per_s", "adam"}.
    """
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    params, batch_stats = init
    model = tm.make_model(c.model, tasks)
    tm.load_flax_params(model, params["model"], batch_stats)
    model = model.to(device, memory_format=torch.channels_last).train()
    weighting = tm.Weighting(c.weighting, tasks, params["weighting"].get("log_var"))
    weighting = weighting.to(device)
    step = tm.TrainStep(model, weighting, tasks, c)  # Adam on the device's params.
    rng = np.random.default_rng(0)
    batch = common._random_batch(
        tasks, batch_size, c.data.crop_frames, c.features.n_mels, rng
    )
    batch = _to_device(tm.to_torch_batch(batch), device)

    def total_loss(batch):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            losses = step.losses(batch)
        return step.weighting(losses)

    if compile_mode is not None:
        torch._dynamo.reset()  # No cache or recompile count from the last setting.
        total_loss = torch.compile(total_loss, mode=compile_mode)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    times = []
    for i in range(num_steps + _WARMUP):
        start = time.perf_counter()
        step.opt.zero_grad(set_to_none=True)
        total_loss(batch).backward()
        step.update()
        sync()
        if i >= _WARMUP:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "step_ms": 1e3 * step_s,
        "samples_per_s": batch_size / step_s,
        "adam": step.adam,
    }


def settings_lines(threads: int, device: str, dtypes, compile_mode) -> list[str]:
    """The run's settings: versions, devices, allocator, threads, dtypes."""
    env = {k: os.environ.get(k, "unset") for k in _ENV}
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if device == "cuda":
        where = (
            f"torch on {torch.cuda.get_device_name()}, TF32 allowed, cudnn.benchmark"
        )
    else:
        where = f"torch on the CPU, {threads} intra-op threads, mkldnn {mkldnn}"
    compiled = "eager"
    if compile_mode is not None:
        compiled = f"eager and torch.compile (mode {compile_mode!r})"
    return [
        f"backend {jax.default_backend()}, {jax.device_count()} device(s) "
        f"({jax.devices()[0].device_kind}), {os.cpu_count()} CPU(s) "
        f"({len(os.sched_getaffinity(0))} usable), {platform.machine()}; "
        f"load average at start {load}",
        f"jax {jax.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}",
        "; ".join(f"{k}={v!r}" for k, v in env.items()),
        f"{where}; channels_last, fused Adam where the build has it, {compiled}, "
        f"no anomaly detection; compute dtypes {', '.join(dtypes)} on both sides "
        "(bfloat16: our model.dtype, torch.autocast)",
    ]


def _default_fusions() -> str:
    return default_config.get_config().train.cpu_library_fusions


def _batches(preset: str, override: str) -> list[int]:
    if override:
        return [int(b) for b in override.split(",")]
    return list(PRESETS[preset][2])


def _time_setting(
    config, init, batch_size, *, rounds, num_steps, device, dtype, compile_mode
):
    """Each side's run of median step time, and torch's step time / ours per round.

    Args:
        config, init, batch_size, num_steps, device, dtype: as `time_torch`'s.
        rounds: alternations of ours, torch eager and (with a compile_mode)
            torch compiled.
        compile_mode: None, or `time_torch`'s compile_mode for a third side.

    Returns:
        ({side: `measure` or `time_torch` dict}, {side: [ratio per round]}),
        sides "ours", "torch" and, with a compile_mode, "compiled".
    """
    torch_timer = functools.partial(
        time_torch, config, init, batch_size, num_steps, device=device, dtype=dtype
    )
    timers = {
        "ours": functools.partial(common.measure, config, batch_size, num_steps),
        "torch": torch_timer,
    }
    if compile_mode is not None:
        timers["compiled"] = functools.partial(torch_timer, compile_mode=compile_mode)
    runs = {side: [] for side in timers}
    for _ in range(rounds):
        for side, timer in timers.items():
            runs[side].append(timer())
    ratios = {
        side: [
            t["step_ms"] / o["step_ms"] for o, t in zip(runs["ours"], r, strict=True)
        ]
        for side, r in runs.items()
        if side != "ours"
    }
    return {side: _median_run(r) for side, r in runs.items()}, ratios


def run(
    presets,
    *,
    batch_sizes: str = "",
    num_steps: int = 10,
    rounds: int = 1,
    input_kind: str = "config",
    check_batch: int = 4,
    rtol: float = 1e-4,
    check: bool = True,
    device: str = "cpu",
    peaks=None,
    compile_mode=None,
):
    """Checks and times each preset at each dtype and batch; yields row dicts.

    Args:
        presets: names of `PRESETS`.
        batch_sizes: comma-separated batches for every preset; empty: presets'.
        num_steps: timed steps per side and round.
        rounds: alternations ours, torch (eager, then compiled); each side's
            step time is the median of its rounds' medians.
        input_kind: a key of `INPUTS`.
        check_batch, rtol: `check_identity`'s batch and tolerance.
        check: whether to run `check_identity` first (else "check" is None).
        device: torch's device, "cpu" or "cuda".
        peaks: {dtype: (FLOP/s, source)} from `flops.peak_flops`, one per
            compute dtype to time; default float32's.
        compile_mode: None, or torch.compile's mode for the compiled column.

    Yields:
        {"preset", "model", "input", "dtype", "batch", "params", "gflop_step"
        (model FLOPs per step, conv + matmul, equal on both sides),
        "xla_gflop_step" (XLA's estimate for ours), "samples_per_s" and "mfu"
        ({side: value}, sides "ours", "torch" and with compile_mode
        "compiled"), "ratios" ({torch side: its step time / ours per round}),
        "ours_xla" (samples/s with train.cpu_library_fusions="xla"; None off
        the CPU backend), "adam", "check" (the identity report, or None)}.

    Raises:
        IdentityError: a twin failed its check (nothing is timed for it).
    """
    peaks = peaks or {"float32": flops.peak_flops("float32")}
    for preset in presets:
        base = make_config(preset, input_kind)
        report = None
        if check:
            report = check_identity(base, batch_size=check_batch, rtol=rtol)
        init = report["init"] if report else _initial_params(base)
        for dtype, (peak, _) in peaks.items():
            config = copy.deepcopy(base)
            config.model.dtype = dtype  # After make_config, which wants float32.
            for batch_size in _batches(preset, batch_sizes):
                sides, ratios = _time_setting(
                    config,
                    init,
                    batch_size,
                    rounds=rounds,
                    num_steps=num_steps,
                    device=device,
                    dtype=dtype,
                    compile_mode=compile_mode,
                )
                model_flops = flops.train_step_flops(config, batch_size)
                step_s = {side: r["step_ms"] / 1e3 for side, r in sides.items()}
                xla_flops = sides["ours"]["gflop_per_s"] * 1e9 * step_s["ours"]
                ours_xla = None
                if jax.default_backend() == "cpu":
                    ours_xla = _xla_fusions(config, batch_size, num_steps)
                yield {
                    "preset": preset,
                    "model": f"{preset} ({PRESETS[preset][3]})",
                    "input": (config.data.crop_frames, config.features.n_mels),
                    "dtype": dtype,
                    "batch": batch_size,
                    "params": state_lib.param_count(init[0]["model"]),
                    "gflop_step": model_flops / 1e9,
                    "xla_gflop_step": xla_flops / 1e9,
                    "samples_per_s": {k: batch_size / v for k, v in step_s.items()},
                    "mfu": {k: model_flops / v / peak for k, v in step_s.items()},
                    "ratios": ratios,
                    "ours_xla": ours_xla,
                    "adam": sides["torch"]["adam"],
                    "check": report,
                }


def _xla_fusions(config, batch_size: int, num_steps: int) -> float:
    """Samples/s of the step with XLA's own choice of CPU library fusions.

    train.cpu_library_fusions; see mtl_ser/training/xla_options.py.
    """
    config = copy.deepcopy(config)
    config.train.cpu_library_fusions = "xla"
    return common.measure(config, batch_size, num_steps)["samples_per_s"]


def _median_run(runs: list) -> dict:
    """The run of median step time (the upper median for an even count)."""
    return sorted(runs, key=lambda r: r["step_ms"])[len(runs) // 2]


def print_check(preset: str, report: dict) -> None:
    """The identity report of one preset as markdown."""
    f = report["flops"]
    print(f"### {preset}: identity check passed, {report['params']:,} params each\n")
    print(
        "| MFLOP per sample | conv+matmul, ours (jaxpr) | conv+matmul, torch "
        "FlopCounterMode | conv+matmul without padding taps | XLA total "
        "| XLA total - that |"
    )
    print("|---|---|---|---|---|---|")
    for part in ("forward", "train"):
        ours, theirs = f[f"ours_{part}"], f[f"torch_{part}"]
        xla, valid = f[f"xla_{part}"], f[f"valid_{part}"]
        cells = [ours, theirs, valid, xla, xla - valid]
        print(f"| {part} | " + " | ".join(f"{v / 1e6:.3f}" for v in cells) + " |")
    print(
        "\nXLA's cost analysis counts a conv's multiply-adds on real inputs only "
        "(no padding taps), and adds the elementwise work torch's counter leaves "
        "out: bias, ReLU, pooling, BatchNorm, losses, and per step Adam, gradient "
        "clipping, norms and the non-finite guard (per-parameter work, so larger "
        "per sample at a small batch)."
    )
    errors = ", ".join(f"{k} {v:.1e}" for k, v in report["errors"].items())
    print(f"Relative errors: {errors}; torch Adam: {report['adam']}.\n", flush=True)


def _identity_line(preset: str, report: dict) -> str:
    f, errors = report["flops"], report["errors"]
    eval_error = max(v for k, v in errors.items() if k.startswith("eval/"))
    return (
        f"- {preset}: {report['params']:,} params and conv+matmul MFLOP per "
        f"sample (forward {f['ours_forward'] / 1e6:.2f}, train step "
        f"{f['ours_train'] / 1e6:.2f}) equal on both sides; relative errors: "
        f"eval outputs {eval_error:.0e}, gradients {errors['train/grads']:.0e}, "
        f"optimizer updates {errors['optimizer/update']:.0e}"
    )


def _columns(compiled: bool, xla_fusions: bool) -> list:
    """(title, cell of a `run` row) of the timing table's columns."""

    def speed(side):
        return lambda r: f"{r['samples_per_s'][side]:.0f}"

    def mfu(side):
        return lambda r: f"{r['mfu'][side]:.3f}"

    def ratio(side):
        return lambda r: f"{r['samples_per_s']['ours'] / r['samples_per_s'][side]:.2f}"

    def per_round(side):
        return lambda r: ", ".join(f"{x:.2f}" for x in r["ratios"][side])

    columns = [
        ("model", lambda r: r["model"]),
        ("input [T, F]", lambda r: f"{r['input'][0]} x {r['input'][1]}"),
        ("dtype", lambda r: r["dtype"]),
        ("batch", lambda r: str(r["batch"])),
        ("params", lambda r: f"{r['params']:,}"),
        ("model GFLOP/step", lambda r: f"{r['gflop_step']:.2f}"),
        ("XLA's GFLOP/step (estimate)", lambda r: f"{r['xla_gflop_step']:.2f}"),
        ("ours samples/s", speed("ours")),
        ("ours MFU", mfu("ours")),
        ("torch samples/s", speed("torch")),
        ("torch MFU", mfu("torch")),
        ("ours / torch", ratio("torch")),
        ("per round", per_round("torch")),
    ]
    if compiled:
        columns += [
            ("torch.compile samples/s", speed("compiled")),
            ("torch.compile MFU", mfu("compiled")),
            ("ours / torch.compile", ratio("compiled")),
            ("per round (compiled)", per_round("compiled")),
        ]
    if xla_fusions:
        columns += [
            ("ours, xla fusions", lambda r: f"{r['ours_xla']:.0f}"),
            (
                "xla fusions / torch",
                lambda r: f"{r['ours_xla'] / r['samples_per_s']['torch']:.2f}",
            ),
        ]
    return columns


def _check_device(device: str) -> None:
    """Ours and torch on one device of the same kind, or a usage error."""
    if device != "cuda":
        return
    if jax.default_backend() != "gpu" or not torch.cuda.is_available():
        raise app.UsageError(
            f"--device=cuda: JAX's backend is {jax.default_backend()}, torch "
            f"{'has' if torch.cuda.is_available() else 'has no'} CUDA; both need "
            "the GPU"
        )
    if jax.device_count() != 1:
        raise app.UsageError(
            f"--device=cuda: JAX sees {jax.device_count()} GPUs and would train "
            "data-parallel over all, torch on one: set CUDA_VISIBLE_DEVICES to one"
        )


def main(argv):
    del argv
    device, dtypes = _DEVICE.value, [d for d in _DTYPES.value.split(",") if d]
    if device == "cuda":
        # Both frameworks share the GPU: JAX would take 75% of it up front.
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
        torch.backends.cuda.matmul.allow_tf32 = True  # As JAX's default.
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # Fixed shapes: autotune, as XLA.
    _check_device(device)
    compile_on = _COMPILE.value if _COMPILE.value is not None else device == "cuda"
    compile_mode = _COMPILE_MODE.value if compile_on else None
    threads = _THREADS.value or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.autograd.set_detect_anomaly(False)
    presets = [p for p in _MODELS.value.split(",") if p]
    print("\n".join(settings_lines(threads, device, dtypes, compile_mode)), flush=True)
    sides = "ours, torch" + (", torch.compile" if compile_mode else "")
    print(
        f"timing: median of {_STEPS.value} steps after {_WARMUP} warm-up steps; "
        f"{_ROUNDS.value} round(s) of {sides} per row, each side's round of "
        "median step time reported; 'per round' lists each round's ratio\n"
    )
    if _CHECK_ONLY.value:
        for preset in presets:
            config = make_config(preset, _INPUT.value)
            report = check_identity(
                config, batch_size=_CHECK_BATCH.value, rtol=_RTOL.value
            )
            print_check(preset, report)
        return
    peaks = {d: flops.peak_flops(d) for d in dtypes}
    xla_fusions = jax.default_backend() == "cpu"
    print(
        "model GFLOP/step: convolutions and matmuls per train step, every kernel "
        "tap (benchmarks/flops.py), the same on both sides; MFU: model FLOP/s "
        "over the peak, " + "; ".join(source for _, source in peaks.values())
    )
    if xla_fusions:
        print(
            f"ours: train.cpu_library_fusions={_default_fusions()!r} (the default); "
            "'xla fusions' is the same step with XLA's own choice"
        )
    columns = _columns(compile_mode is not None, xla_fusions)
    print("\n| " + " | ".join(title for title, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    adam, checks = set(), {}
    for r in run(
        presets,
        batch_sizes=_BATCHES.value,
        num_steps=_STEPS.value,
        input_kind=_INPUT.value,
        check_batch=_CHECK_BATCH.value,
        rtol=_RTOL.value,
        rounds=_ROUNDS.value,
        check=_CHECK.value,
        device=device,
        peaks=peaks,
        compile_mode=compile_mode,
    ):
        adam.add(r["adam"])
        checks[r["preset"]] = r["check"]
        print("| " + " | ".join(cell(r) for _, cell in columns) + " |", flush=True)
    print(f"\ntorch Adam: {', '.join(sorted(adam))}.")
    if _CHECK.value:
        print("Identity (check_identity):")
        for preset, report in checks.items():
            print(_identity_line(preset, report))


if __name__ == "__main__":
    app.run(main)
