"""Our train step against the identical model trained by PyTorch, in one run.

  .venv/bin/python -m benchmarks.torch_reference                  # default models
  .venv/bin/python -m benchmarks.torch_reference --check_only     # identity only
  .venv/bin/python -m benchmarks.torch_reference --models=alexnet \
      --batch_sizes=16,64 --steps=30 --input=issue

Needs the optional `bench` extra (torch 2.13.0, CPU build); mtl_ser itself
never imports torch. For each model preset the PyTorch twin
(`benchmarks/torch_models.py`) is built from the same config and proven the
same before anything is timed (`check_identity`, which raises `IdentityError`,
so no ratio is printed for a twin that differs): equal parameter counts;
equal convolution + matmul FLOPs, forward and per train step (ours counted
from the jaxpr, torch's by `FlopCounterMode`); with our parameters copied
across, equal eval outputs and training-mode losses and gradients; and the
same optimizer updates (clipping, Adam, schedule) from the same gradients.

Then, per batch size, our jitted train step (`benchmarks.common.measure`: AOT
compile, median of `steps` after 3 warm-up steps, `block_until_ready`) and the
torch step (channels_last, fused Adam, grad clipping and the learning-rate
schedule as configured, all usable cores, median after the same warm-up) are
timed one after the other, and the table gives ours / torch. Both start from
our initial parameters on the same random batch. The timings mean something
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

from benchmarks import common
from benchmarks import torch_models as tm
from benchmarks.common import INPUTS, PRESETS, make_config
from configs import default as default_config
from mtl_ser import tasks as tasks_lib
from mtl_ser import weighting as weighting_lib
from mtl_ser.training import loop, optim, sharding
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


class IdentityError(AssertionError):
    """The torch twin is not the same function as our model."""


# ---------------------------------------------------------------- FLOPs


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):  # ClosedJaxpr
                yield item.jaxpr
            elif hasattr(item, "eqns"):  # Jaxpr
                yield item


def _valid_taps(n, lhs_dilation, pad_lo, k, rhs_dilation, stride, m) -> int:
    """(output position, kernel tap) pairs along one axis that read a real input.

    Taps on padding or on the holes of a dilated input do not count.
    """
    length = (n - 1) * lhs_dilation + 1
    count = 0
    for o in range(m):
        for t in range(k):
            pos = o * stride + t * rhs_dilation - pad_lo
            count += 0 <= pos < length and pos % lhs_dilation == 0
    return count


def _conv_flops(eqn, convention: str) -> int:
    """FLOPs of one conv_general_dilated, 2 per multiply-add.

    "torch": every kernel tap of every output position (of every input
    position for a transposed conv, i.e. one with lhs dilation), padding
    included, as torch's FlopCounterMode counts. "xla": only taps that read a
    real input element, as XLA's HloCostAnalysis counts.
    """
    lhs, rhs, out = (v.aval for v in (*eqn.invars[:2], eqn.outvars[0]))
    p = eqn.params
    dn = p["dimension_numbers"]  # specs: (batch or O, feature or I, spatial...)
    window = 1
    for i, (dl, dr, do) in enumerate(
        zip(dn.lhs_spec[2:], dn.rhs_spec[2:], dn.out_spec[2:], strict=True)
    ):
        n, k, m = lhs.shape[dl], rhs.shape[dr], out.shape[do]
        if convention == "xla":
            window *= _valid_taps(
                n,
                p["lhs_dilation"][i],
                p["padding"][i][0],
                k,
                p["rhs_dilation"][i],
                p["window_strides"][i],
                m,
            )
        else:
            window *= (n if p["lhs_dilation"][i] > 1 else m) * k
    batch_and_features = out.shape[dn.out_spec[0]] * out.shape[dn.out_spec[1]]
    return 2 * batch_and_features * window * rhs.shape[dn.rhs_spec[1]]


def matmul_flops(jaxpr, convention: str = "torch") -> int:
    """Convolution and dot FLOPs of a jaxpr, 2 per multiply-add.

    Recurses into nested jaxprs (jit, custom_jvp/vjp). See `_conv_flops` for
    the two conventions; dots count the same in both. The "torch" convention
    matches FlopCounterMode exactly for forward and weight-gradient convs and
    for input-gradient convs of strided or size-preserving ("same") convs, all
    that our trunks have. For a stride-1 conv whose output is smaller than its
    input, torch sizes the input gradient's count by that output, this by the
    input, so the two would differ.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_flops(eqn, convention)
        elif name == "dot_general":
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            (contract, _), _ = eqn.params["dimension_numbers"]
            depth = math.prod(lhs.shape[d] for d in contract)
            total += 2 * math.prod(out.shape) * depth
        for sub in _subjaxprs(eqn):
            total += matmul_flops(sub, convention)
    return total


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
        "train": steps.train_fn.trace(state, batch).jaxpr,
    }
    counts = {
        "xla_forward": _xla_flops(
            jax.jit(forward).lower(variables, batch["x"]).compile()
        ),
        "xla_train": _xla_flops(steps.train_fn.lower(state, batch).compile()),
    }
    for part, jaxpr in jaxprs.items():
        counts[f"ours_{part}"] = matmul_flops(jaxpr, "torch")
        counts[f"valid_{part}"] = matmul_flops(jaxpr, "xla")
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
        counting convention; see `matmul_flops`);
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
    steps = loop.build_steps(config, tasks, mesh)
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
    errors = _check_outputs(model, twin, variables, batch, tasks)
    errors.update(
        _check_grads(check, params, batch_stats, batch, tbatch, twin, weighting)
    )
    device_batch = sharding.from_process_local(batch, mesh)
    flops = _check_flops(steps, state, device_batch, twin, step, tbatch)
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
        ours, theirs = flops[f"ours_{part}"], flops[f"torch_{part}"]
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
        "flops": {k: v / batch_size for k, v in flops.items()},
        "errors": errors,
        "adam": step.adam,
        "init": init,
    }


# ---------------------------------------------------------------- timing


def time_torch(config, init, batch_size: int, num_steps: int) -> dict:
    """Median torch train step of the twin started from our initial params.

    Args:
        config: the experiment config.
        init: our host (params, batch_stats), as `check_identity` returns.
        batch_size: global batch.
        num_steps: timed steps, after `_WARMUP` untimed ones.

    Returns:
        {"step_ms", "samples_per_s", "adam"}.
    """
    c = config
    tasks = tasks_lib.make_tasks(c.tasks, c.emotion_classes, c.regression_loss)
    params, batch_stats = init
    model = tm.make_model(c.model, tasks)
    tm.load_flax_params(model, params["model"], batch_stats)
    model = model.to(memory_format=torch.channels_last).train()
    weighting = tm.Weighting(c.weighting, tasks, params["weighting"].get("log_var"))
    step = tm.TrainStep(model, weighting, tasks, c)
    batch = tm.to_torch_batch(
        common._random_batch(
            tasks,
            batch_size,
            c.data.crop_frames,
            c.features.n_mels,
            np.random.default_rng(0),
        )
    )
    times = []
    for i in range(num_steps + _WARMUP):
        start = time.perf_counter()
        step(batch)
        if i >= _WARMUP:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "step_ms": 1e3 * step_s,
        "samples_per_s": batch_size / step_s,
        "adam": step.adam,
    }


def settings_lines(threads: int) -> list[str]:
    """The run's settings: versions, devices, allocator, threads."""
    env = {k: os.environ.get(k, "unset") for k in _ENV}
    mkldnn = torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPU(s) ({len(os.sched_getaffinity(0))} usable), "
        f"{platform.machine()}; load average at start {load}",
        f"jax {jax.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}",
        "; ".join(f"{k}={v!r}" for k, v in env.items()),
        f"torch: {threads} intra-op threads, channels_last, mkldnn {mkldnn}, "
        "no anomaly detection; float32 on both sides",
    ]


def _default_fusions() -> str:
    return default_config.get_config().train.cpu_library_fusions


def _batches(preset: str, override: str) -> list[int]:
    if override:
        return [int(b) for b in override.split(",")]
    return list(PRESETS[preset][2])


def run(
    presets,
    *,
    batch_sizes: str = "",
    num_steps: int = 10,
    rounds: int = 1,
    input_kind: str = "config",
    check_batch: int = 4,
    rtol: float = 1e-4,
):
    """Checks and times each preset at each batch; yields one row dict each.

    Args:
        presets: names of `PRESETS`.
        batch_sizes: comma-separated batches for every preset; empty: presets'.
        num_steps: timed steps per side and round.
        rounds: alternations ours, torch; each side's step time is the median
            of its rounds' medians.
        input_kind: a key of `INPUTS`.
        check_batch, rtol: `check_identity`'s batch and tolerance.

    Yields:
        {"preset", "model", "input", "batch", "params", "gflop_step" (conv +
        matmul, both sides), "xla_gflop_step", "ours_ms", "torch_ms", "ours",
        "ours_xla" (with train.cpu_library_fusions="xla"), "torch" (samples/s),
        "ours_gflop_per_s" (XLA's count), "ratios" (ours / torch samples/s of
        each round), "adam", "check" (the identity report)}.

    Raises:
        IdentityError: a twin failed its check (nothing is timed for it).
    """
    for preset in presets:
        config = make_config(preset, input_kind)
        report = check_identity(config, batch_size=check_batch, rtol=rtol)
        xla_default = copy.deepcopy(config)
        xla_default.train.cpu_library_fusions = "xla"
        for batch_size in _batches(preset, batch_sizes):
            ours_runs, torch_runs = [], []
            for _ in range(rounds):
                ours_runs.append(common.measure(config, batch_size, num_steps))
                torch_runs.append(
                    time_torch(config, report["init"], batch_size, num_steps)
                )
            ours = _median_run(ours_runs)
            theirs = _median_run(torch_runs)
            # The same step with XLA's own choice of CPU library fusions
            # (train.cpu_library_fusions; see mtl_ser/training/xla_options.py).
            ours_xla = common.measure(xla_default, batch_size, num_steps)
            xla_flops = ours["gflop_per_s"] * ours["step_ms"] * 1e-3 * 1e9
            yield {
                "preset": preset,
                "model": f"{preset} ({PRESETS[preset][3]})",
                "input": (config.data.crop_frames, config.features.n_mels),
                "batch": batch_size,
                "params": report["params"],
                "gflop_step": report["flops"]["ours_train"] * batch_size / 1e9,
                "xla_gflop_step": xla_flops / 1e9,
                "ours_ms": ours["step_ms"],
                "torch_ms": theirs["step_ms"],
                "ours": ours["samples_per_s"],
                "ours_xla": ours_xla["samples_per_s"],
                "ours_gflop_per_s": ours["gflop_per_s"],
                "torch": theirs["samples_per_s"],
                "ratios": [
                    t["step_ms"] / o["step_ms"]
                    for o, t in zip(ours_runs, torch_runs, strict=True)
                ],
                "adam": theirs["adam"],
                "check": report,
            }


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


def main(argv):
    del argv
    threads = _THREADS.value or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.autograd.set_detect_anomaly(False)
    presets = [p for p in _MODELS.value.split(",") if p]
    print("\n".join(settings_lines(threads)), flush=True)
    print(
        f"timing: median of {_STEPS.value} steps after {_WARMUP} warm-up steps; "
        f"{_ROUNDS.value} round(s) of ours then torch per row, each side's round "
        "of median step time reported; 'per round' lists each round's ratio\n"
    )
    if _CHECK_ONLY.value:
        for preset in presets:
            config = make_config(preset, _INPUT.value)
            report = check_identity(
                config, batch_size=_CHECK_BATCH.value, rtol=_RTOL.value
            )
            print_check(preset, report)
        return
    peak = common.matmul_peak_gflops()
    print(
        f"ours: train.cpu_library_fusions={_default_fusions()!r} (the default); 'xla "
        "fusions' is the same step with XLA's own choice; of peak: XLA's GFLOP/s "
        f"over the float32 matmul rate measured now, {peak:.0f} GFLOP/s\n"
    )
    print(
        "| model | input [T, F] | batch | params | GFLOP/step conv+matmul "
        "| XLA GFLOP/step | ours samples/s | of peak | ours, xla fusions "
        "| torch samples/s | ours / torch | per round | xla fusions / torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    adam, checks = set(), {}
    for r in run(
        presets,
        batch_sizes=_BATCHES.value,
        num_steps=_STEPS.value,
        input_kind=_INPUT.value,
        check_batch=_CHECK_BATCH.value,
        rtol=_RTOL.value,
        rounds=_ROUNDS.value,
    ):
        adam.add(r["adam"])
        checks[r["preset"]] = r["check"]
        print(
            f"| {r['model']} | {r['input'][0]} x {r['input'][1]} | {r['batch']} "
            f"| {r['params']:,} | {r['gflop_step']:.2f} | {r['xla_gflop_step']:.2f} "
            f"| {r['ours']:.0f} | {r['ours_gflop_per_s'] / peak:.2f} "
            f"| {r['ours_xla']:.0f} | {r['torch']:.0f} "
            f"| {r['ours'] / r['torch']:.2f} "
            f"| {', '.join(f'{x:.2f}' for x in r['ratios'])} "
            f"| {r['ours_xla'] / r['torch']:.2f} |",
            flush=True,
        )
    print(f"\ntorch Adam: {', '.join(sorted(adam))}. Identity (check_identity):")
    for preset, report in checks.items():
        print(_identity_line(preset, report))


if __name__ == "__main__":
    app.run(main)
