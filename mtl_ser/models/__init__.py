"""CNN trunks, multitask heads and the model registry."""

from typing import Any

import jax.numpy as jnp

from mtl_ser.models.alexnet import AlexNet
from mtl_ser.models.heads import MultiTaskModel, is_head_path
from mtl_ser.models.layers import adaptive_avg_pool, max_pool
from mtl_ser.models.vgg import VGG, VGG11, VGG13, VGG16, VGG19

# Config name -> trunk constructor taking width, hidden, dropout, batch_norm,
# dtype keywords.
TRUNKS = {
    "alexnet": AlexNet,
    "vgg11": VGG11,
    "vgg13": VGG13,
    "vgg16": VGG16,
    "vgg19": VGG19,
}

__all__ = [
    "TRUNKS",
    "VGG",
    "VGG11",
    "VGG13",
    "VGG16",
    "VGG19",
    "AlexNet",
    "MultiTaskModel",
    "adaptive_avg_pool",
    "is_head_path",
    "make_model",
    "max_pool",
]


def make_model(
    name: str,
    head_sizes: tuple[tuple[str, int], ...],
    *,
    width: float = 1.0,
    hidden: int = 4096,
    dropout: float = 0.5,
    batch_norm: bool = False,
    deltas: int = 0,
    pool_size: tuple[int, ...] = (),
    dtype: Any = jnp.float32,
) -> MultiTaskModel:
    """Builds a registered trunk with one head per task.

    Args:
        name: trunk name, a key of `TRUNKS`.
        head_sizes: `(task name, output size)` pairs.
        width: channel and hidden-size multiplier of the trunk.
        hidden: hidden Dense size of the trunk at width 1.
        dropout: trunk dropout rate.
        batch_norm: whether the trunk uses BatchNorm after each conv.
        deltas: time-derivative orders added as input channels (0, 1 or 2).
        pool_size: `(time, mel)` output of the trunk's adaptive average pool
          before its hidden Dense layers; empty for the trunk's own
          (torchvision's: AlexNet 6x6, VGG 7x7). `(1, 1)` is global average
          pooling.
        dtype: computation dtype; parameters stay float32.

    Returns:
        The unbound `MultiTaskModel`.

    Raises:
        ValueError: for an unknown `name`.
    """
    if name not in TRUNKS:
        raise ValueError(
            f"model.name={name!r}: unknown; choose one of {sorted(TRUNKS)}"
        )
    pool = {"pool_size": tuple(int(n) for n in pool_size)} if pool_size else {}
    trunk = TRUNKS[name](
        width=width,
        hidden=hidden,
        dropout=dropout,
        batch_norm=batch_norm,
        dtype=dtype,
        **pool,
    )
    head_sizes = tuple((str(task), int(size)) for task, size in head_sizes)
    return MultiTaskModel(trunk=trunk, head_sizes=head_sizes, deltas=int(deltas))
