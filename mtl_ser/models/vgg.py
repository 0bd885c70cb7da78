"""VGG trunks: torchvision's VGG-11/13/16/19 up to the last hidden layer."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from mtl_ser.models import layers

# torchvision's cfgs A, B, D, E: conv channels, "M" for a 2/2 max pool.
_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (
        *(64, 64, "M", 128, 128, "M"),
        *(256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    ),
    19: (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}
# Five 2/2 max pools: T and F must be at least 2 ** 5.
MIN_INPUT_SIZE = 32


class VGG(nn.Module):
    """torchvision's VGG features and hidden classifier layers, NHWC.

    Input `[B, T, F, C]` (H = time, W = mel, any C). 3x3 convs (padding 1) with
    ReLU and optional BatchNorm, 2/2 max pools, adaptive average pool to
    `pool_size`, then Dropout, Dense, ReLU, Dropout, Dense, ReLU. The last
    ReLU's output is the embedding; the task heads go on top of it.

    Attributes:
        depth: number of weight layers, one of 11, 13, 16, 19.
        width: multiplies every conv's channels and the hidden Dense size.
        hidden: hidden Dense size at width 1.
        dropout: dropout rate before each hidden Dense.
        pool_size: adaptive average pool output `(h, w)`.
        batch_norm: whether to add BatchNorm after each conv.
        dtype: computation dtype (e.g. `jnp.bfloat16`); params stay float32.
    """

    depth: int = 16
    width: float = 1.0
    hidden: int = 4096
    dropout: float = 0.5
    pool_size: tuple[int, int] = (7, 7)
    batch_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Computes the embedding.

        Args:
            x: input `[B, T, F, C]` with T, F >= `MIN_INPUT_SIZE`.
            train: enables dropout and BatchNorm batch statistics.

        Returns:
            Embedding `[B, round(hidden * width)]` in `dtype`.

        Raises:
            ValueError: for an unsupported depth or a too small input.
        """
        if self.depth not in _CFGS:
            raise ValueError(
                f"VGG depth={self.depth!r}: unknown; choose one of {sorted(_CFGS)}"
            )
        layers.check_input(x, MIN_INPUT_SIZE, f"VGG-{self.depth}")
        index, last_conv = 0, sum(item != "M" for item in _CFGS[self.depth])
        for item in _CFGS[self.depth]:
            if item == "M":
                x = layers.max_pool(x, 2, 2)
                continue
            index += 1
            x = layers.conv_bn_relu(
                x,
                layers.scaled(item, self.width),
                3,
                padding=1,
                batch_norm=self.batch_norm,
                train=train,
                dtype=self.dtype,
                kernel_init=layers.he_fan_out_init,
                index=index,
            )
            if index == last_conv and not self.is_initializing():
                # Grad-CAM's handle on the last conv layer (training/analysis.py):
                # a zero perturbation whose gradient is the activations', and
                # the activations. No-ops unless a caller passes perturbations
                # or makes intermediates mutable; init creates neither.
                x = self.perturb("last_conv", x)
                self.sow("intermediates", "last_conv", x)
        # [B, T / 32, F / 32, 512 * width]
        x = layers.adaptive_avg_pool(x, self.pool_size)  # [B, 7, 7, 512 * width]
        return layers.Classifier(
            layers.scaled(self.hidden, self.width),
            self.dropout,
            dtype=self.dtype,
            kernel_init=layers.small_normal_init,
            name="classifier",
        )(x, train=train)  # [B, hidden * width]


VGG11 = functools.partial(VGG, depth=11)
VGG13 = functools.partial(VGG, depth=13)
VGG16 = functools.partial(VGG, depth=16)
VGG19 = functools.partial(VGG, depth=19)
