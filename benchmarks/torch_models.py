"""PyTorch twins of mtl_ser's models, losses and optimizer, for `torch_reference`.

Only the benchmark imports this module (torch is the optional `bench` extra,
never a dependency of mtl_ser). Everything is built from the same config and
the same layer tables as the Flax side (`alexnet._CONVS`, `vgg._CFGS`,
`layers.scaled`), so a change there changes both. Layouts: torch computes NCHW
tensors (stored channels_last when timing) with `[B, 1, T, F]` for our
`[B, T, F, 1]`; `load_flax_params` moves our initialised parameters across,
transposing kernels and permuting fc1's rows from our H, W, C flatten order to
torch's C, H, W.
"""

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mtl_ser import tasks as tasks_lib
from mtl_ser.models import alexnet, layers, vgg

# A plan is a tuple of ("conv", channels, kernel, stride, padding) and
# ("pool", window, stride) entries, the trunk's layers in order.


def _alexnet_plan(width: float):
    plan = []
    for channels, kernel, stride, pad, pool in alexnet._CONVS:
        plan.append(("conv", layers.scaled(channels, width), kernel, stride, pad))
        if pool:
            plan.append(("pool", 3, 2))
    return tuple(plan)


def _vgg_plan(depth: int, width: float):
    return tuple(
        ("pool", 2, 2) if item == "M" else ("conv", layers.scaled(item, width), 3, 1, 1)
        for item in vgg._CFGS[depth]
    )


def trunk_plan(model_cfg):
    """(plan, adaptive pool size) of the config's trunk (model.pool_size, or its own).

    Raises:
        ValueError: for a trunk name without a torch twin.
    """
    name, pool = model_cfg.name, tuple(model_cfg.pool_size)
    if name == "alexnet":
        return _alexnet_plan(model_cfg.width), pool or alexnet.AlexNet.pool_size
    if name.startswith("vgg") and int(name[3:]) in vgg._CFGS:
        return _vgg_plan(int(name[3:]), model_cfg.width), pool or vgg.VGG.pool_size
    raise ValueError(f"model.name={name!r}: no PyTorch twin")


class Trunk(nn.Module):
    """Conv [BN] ReLU stages with max pools, adaptive average pool, classifier.

    Submodules are named as the Flax params: `conv{i}`, `bn{i}`, `fc1`, `fc2`.
    """

    def __init__(self, plan, pool_size, hidden: int, dropout: float, batch_norm: bool):
        super().__init__()
        self.plan = plan
        channels, index = 1, 0
        for entry in plan:
            if entry[0] != "conv":
                continue
            _, out, kernel, stride, pad = entry
            index += 1
            self.add_module(
                f"conv{index}", nn.Conv2d(channels, out, kernel, stride, pad)
            )
            if batch_norm:
                # eps and momentum as layers.conv_bn_relu (flax momentum 0.9).
                self.add_module(f"bn{index}", nn.BatchNorm2d(out, 1e-5, 0.1))
            channels = out
        self.batch_norm = batch_norm
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.fc1 = nn.Linear(channels * pool_size[0] * pool_size[1], hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x):  # [B, 1, T, F] -> [B, hidden]
        index = 0
        for entry in self.plan:
            if entry[0] == "pool":
                x = F.max_pool2d(x, entry[1], entry[2])
                continue
            index += 1
            x = getattr(self, f"conv{index}")(x)
            if self.batch_norm:
                x = getattr(self, f"bn{index}")(x)
            x = F.relu(x)
        x = torch.flatten(self.pool(x), 1)  # [B, C * h * w], torch's order
        x = F.relu(self.fc1(self.drop1(x)))
        return F.relu(self.fc2(self.drop2(x)))


class MultiTaskModel(nn.Module):
    """The trunk and one Linear head per task; returns {task: [B, size]}."""

    def __init__(self, trunk: Trunk, head_sizes, hidden: int):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict(
            {name: nn.Linear(hidden, size) for name, size in head_sizes}
        )

    def forward(self, x):
        embedding = self.trunk(x)
        return {name: head(embedding) for name, head in self.heads.items()}


def make_model(model_cfg, tasks) -> MultiTaskModel:
    """The torch twin of `mtl_ser.models.make_model` for the `model` config."""
    plan, pool_size = trunk_plan(model_cfg)
    hidden = layers.scaled(model_cfg.hidden, model_cfg.width)
    trunk = Trunk(plan, pool_size, hidden, model_cfg.dropout, model_cfg.batch_norm)
    return MultiTaskModel(trunk, [(t.name, t.output_size) for t in tasks], hidden)


def _tensor(value) -> torch.Tensor:
    """float32 tensor of an array; float64 stays float64 (gradient checks)."""
    value = np.asarray(value)
    dtype = np.float64 if value.dtype == np.float64 else np.float32
    return torch.from_numpy(np.array(value, dtype))


def _set(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{name}: torch {tuple(param.shape)} vs ours {value.shape}")
    with torch.no_grad():
        param.copy_(value)


def load_flax_params(model: MultiTaskModel, params, batch_stats) -> None:
    """Copies our Flax params (and BatchNorm statistics) into `model`.

    Conv kernels [kh, kw, Cin, Cout] become [Cout, Cin, kh, kw]; Dense kernels
    [in, out] become [out, in]; fc1's input rows go from our (h, w, c) order to
    torch's (c, h, w).

    Args:
        model: from `make_model` with the same config.
        params: our `params["model"]` (host or device arrays).
        batch_stats: our `batch_stats` ({} without BatchNorm).
    """
    trunk, ours = model.trunk, params["trunk"]
    for name, module in trunk.named_children():
        if name.startswith("conv"):
            kernel = _tensor(ours[name]["kernel"]).permute(3, 2, 0, 1)
            _set(module.weight, kernel, name)
            _set(module.bias, _tensor(ours[name]["bias"]), name)
        elif name.startswith("bn"):
            _set(module.weight, _tensor(ours[name]["scale"]), name)
            _set(module.bias, _tensor(ours[name]["bias"]), name)
            stats = batch_stats["trunk"][name]
            _set(module.running_mean, _tensor(stats["mean"]), name)
            _set(module.running_var, _tensor(stats["var"]), name)
    channels = trunk.fc1.in_features // math.prod(trunk.pool.output_size)
    h, w = trunk.pool.output_size
    fc1 = _tensor(ours["classifier"]["fc1"]["kernel"])  # [h * w * c, hidden]
    fc1 = fc1.reshape(h, w, channels, -1).permute(3, 2, 0, 1).reshape(fc1.shape[1], -1)
    _set(trunk.fc1.weight, fc1, "fc1")
    _set(trunk.fc1.bias, _tensor(ours["classifier"]["fc1"]["bias"]), "fc1")
    _set(trunk.fc2.weight, _tensor(ours["classifier"]["fc2"]["kernel"]).T, "fc2")
    _set(trunk.fc2.bias, _tensor(ours["classifier"]["fc2"]["bias"]), "fc2")
    for name, head in model.heads.items():
        _set(head.weight, _tensor(params[f"head_{name}"]["kernel"]).T, name)
        _set(head.bias, _tensor(params[f"head_{name}"]["bias"]), name)


def to_torch_params(model: MultiTaskModel, params) -> dict:
    """Our params (or gradients) as {torch parameter name: tensor} of `model`.

    Uses `load_flax_params` on a copy, so the layout rules live in one place.
    """
    twin = copy.deepcopy(model)
    load_flax_params(twin, params, _zero_stats(twin))
    return {name: p.detach().clone() for name, p in twin.named_parameters()}


def _zero_stats(model: MultiTaskModel) -> dict:
    """Placeholder BatchNorm statistics of the right shapes."""
    stats = {}
    for name, module in model.trunk.named_children():
        if name.startswith("bn"):
            zeros = np.zeros(module.num_features, np.float32)
            stats[name] = {"mean": zeros, "var": zeros + 1.0}
    return {"trunk": stats}


def task_loss(task, outputs, labels, mask):
    """`mtl_ser.tasks.task_loss` in torch: the masked mean loss of one task."""
    denom = torch.clamp(mask.sum(), min=1.0)
    if task.kind == tasks_lib.CLASSIFICATION:
        per_example = F.cross_entropy(outputs, labels, reduction="none")
        return (per_example * mask).sum() / denom
    pred = outputs[:, 0]
    if task.loss == "mse":
        return ((pred - labels) ** 2 * mask).sum() / denom
    if task.loss == "ccc":
        n = denom
        mx, my = (pred * mask).sum() / n, (labels * mask).sum() / n
        vx = ((pred - mx) ** 2 * mask).sum() / n
        vy = ((labels - my) ** 2 * mask).sum() / n
        cov = ((pred - mx) * (labels - my) * mask).sum() / n
        return 1.0 - 2.0 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)
    raise ValueError(f"regression_loss={task.loss!r}: choose 'mse' or 'ccc'")


def task_losses(model, tasks, batch):
    """`mtl_ser.tasks.loss_vector` of the twin on a `to_torch_batch` batch: [T]."""
    outputs = model(batch["x"])
    labels, masks = batch["labels"], batch["masks"]
    return torch.stack(
        [task_loss(t, outputs[t.name], labels[t.name], masks[t.name]) for t in tasks]
    )


class Weighting(nn.Module):
    """The loss-based weightings with a torch twin: equal, fixed, uncertainty.

    Mirrors `mtl_ser.weighting.loss_based`; uncertainty's log-variances are a
    parameter trained by the same optimizer, as `params["weighting"]` is.
    """

    SUPPORTED = ("equal", "fixed", "uncertainty", "uncertainty_revised")

    def __init__(self, cfg, tasks, log_var=None):
        super().__init__()
        if cfg.name not in self.SUPPORTED:
            raise ValueError(
                f"weighting.name={cfg.name!r}: no PyTorch twin; use one of "
                f"{self.SUPPORTED}"
            )
        self.name = cfg.name
        if cfg.name == "fixed":
            weights = [float(w) for w in cfg.fixed_weights.split(",")]
            self.register_buffer("weights", torch.tensor(weights))
        if cfg.name.startswith("uncertainty"):
            if cfg.uncertainty_form == "libmtl":
                half = [True for _ in tasks]
            else:  # "kendall": 1/2 only for regression.
                half = [t.kind == tasks_lib.REGRESSION for t in tasks]
            self.register_buffer(
                "factor", torch.tensor([0.5 if h else 1.0 for h in half])
            )
            init = np.full(len(tasks), cfg.init_log_var, np.float32)
            init = init if log_var is None else np.asarray(log_var, np.float32)
            self.log_var = nn.Parameter(torch.from_numpy(init.copy()))

    def forward(self, losses):  # [T] -> scalar
        if self.name == "equal":
            return losses.sum()
        if self.name == "fixed":
            return (self.weights * losses).sum()
        s = self.log_var
        reg = F.softplus(s) if self.name == "uncertainty_revised" else 0.5 * s
        return (self.factor * torch.exp(-s) * losses + reg).sum()


def learning_rate(optim_cfg, num_steps: int, step: int) -> float:
    """`mtl_ser.training.optim.make_schedule` as a Python function of the step."""
    peak, warmup = optim_cfg.learning_rate, optim_cfg.warmup_steps
    if warmup > 0 and step < warmup:
        return peak * step / warmup
    step -= max(warmup, 0)
    if optim_cfg.schedule == "constant":
        return peak
    decay_steps = max(num_steps - optim_cfg.warmup_steps, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))
    alpha = optim_cfg.end_lr_factor
    return peak * ((1.0 - alpha) * cosine + alpha)


def make_optimizer(optim_cfg, num_steps: int, parameters):
    """(Adam, LambdaLR scheduler, adam variant) for the `optim` config.

    Fused Adam (one kernel over all parameters) when this torch build has it
    on CPU, else the multi-tensor `foreach` implementation. Adam's defaults
    (betas 0.9/0.999, eps 1e-8 added to sqrt(v_hat)) are optax.adam's.

    Raises:
        ValueError: for an optimizer other than adam.
    """
    if optim_cfg.name != "adam":
        raise ValueError(f"optim.name={optim_cfg.name!r}: the twin mirrors adam only")
    parameters = list(parameters)
    peak = optim_cfg.learning_rate
    try:
        opt, variant = torch.optim.Adam(parameters, lr=peak, fused=True), "fused"
    except (RuntimeError, ValueError):
        opt, variant = torch.optim.Adam(parameters, lr=peak, foreach=True), "foreach"
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: learning_rate(optim_cfg, num_steps, step) / peak
    )
    return opt, schedule, variant


class TrainStep:
    """One optimizer step of the torch twin: forward, losses, backward, clip, Adam.

    The same work as our train step's loss-based path; ours also computes
    finiteness checks and norms for its metrics, which the FLOP comparison
    counts on our side only.
    """

    def __init__(self, model, weighting, tasks, config):
        self.model, self.weighting, self.tasks = model, weighting, tasks
        self.parameters = list(model.parameters()) + list(weighting.parameters())
        self.grad_clip = config.optim.grad_clip
        self.opt, self.schedule, self.adam = make_optimizer(
            config.optim, config.train.num_steps, self.parameters
        )

    def losses(self, batch):
        return task_losses(self.model, self.tasks, batch)

    def backward(self, batch):
        """Fresh gradients of the weighted total loss; returns the total."""
        self.opt.zero_grad(set_to_none=True)
        total = self.weighting(self.losses(batch))
        total.backward()
        return total.detach()

    def update(self):
        """Clips the gradients, takes the Adam step, advances the schedule."""
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip, foreach=True)
        self.opt.step()
        self.schedule.step()

    def __call__(self, batch):
        """Runs one step on a batch from `to_torch_batch`; returns the total loss."""
        total = self.backward(batch)
        self.update()
        return total


def to_torch_batch(batch, channels_last: bool = True) -> dict:
    """Our host batch {"x": [B, T, F, 1], labels, masks} as torch tensors.

    x becomes `[B, 1, T, F]`, stored channels_last (NHWC in memory) by default.
    """
    x = torch.from_numpy(np.asarray(batch["x"], np.float32)).permute(0, 3, 1, 2)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    labels = {}
    for name, value in batch["labels"].items():
        value = np.asarray(value)
        labels[name] = torch.from_numpy(
            value.astype(np.int64) if value.dtype.kind == "i" else value.copy()
        )
    return {
        "x": x.contiguous(memory_format=memory),
        "labels": labels,
        "masks": {k: torch.from_numpy(np.array(v)) for k, v in batch["masks"].items()},
    }


def to_float64(batch: dict) -> dict:
    """A `to_torch_batch` batch with every floating tensor in float64."""

    def cast(x):
        return x.double() if x.is_floating_point() else x

    return {
        "x": cast(batch["x"]),
        "labels": {k: cast(v) for k, v in batch["labels"].items()},
        "masks": {k: cast(v) for k, v in batch["masks"].items()},
    }
