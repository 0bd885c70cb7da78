"""AlexNet trunk: torchvision's AlexNet up to the last hidden layer."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from mtl_ser.models import layers

# (channels, kernel, stride, padding, max pool after) of the five convs.
_CONVS = (
    (64, 11, 4, 2, True),
    (192, 5, 1, 2, True),
    (384, 3, 1, 1, False),
    (256, 3, 1, 1, False),
    (256, 3, 1, 1, True),
)
# Smallest T and F the three 3/2 max pools accept: the last needs a 3-wide map,
# so the second needs 7, the first 15, and conv1 (k11 s4 p2) 4 * 14 + 11 - 4.
MIN_INPUT_SIZE = 63


class AlexNet(nn.Module):
    """torchvision's AlexNet features and hidden classifier layers, NHWC.

    Input `[B, T, F, C]` (H = time, W = mel, any C). Conv, ReLU and 3/2 max
    pool stages as in torchvision, adaptive average pool to `pool_size`, then
    Dropout, Dense, ReLU, Dropout, Dense, ReLU. The last ReLU's output is the
    embedding; the task heads go on top of it.

    Attributes:
        width: multiplies every conv's channels and the hidden Dense size.
        hidden: hidden Dense size at width 1.
        dropout: dropout rate before each hidden Dense.
        pool_size: adaptive average pool output `(h, w)`.
        batch_norm: whether to add BatchNorm after each conv.
        dtype: computation dtype (e.g. `jnp.bfloat16`); params stay float32.
    """

    width: float = 1.0
    hidden: int = 4096
    dropout: float = 0.5
    pool_size: tuple[int, int] = (6, 6)
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
        """
        layers.check_input(x, MIN_INPUT_SIZE, "AlexNet")
        for index, (channels, kernel, stride, pad, pool) in enumerate(_CONVS, 1):
            x = layers.conv_bn_relu(
                x,
                layers.scaled(channels, self.width),
                kernel,
                stride=stride,
                padding=pad,
                batch_norm=self.batch_norm,
                train=train,
                dtype=self.dtype,
                # torchvision leaves AlexNet at torch's default init.
                kernel_init=layers.torch_default_init,
                index=index,
            )
            if index == len(_CONVS) and not self.is_initializing():
                # Grad-CAM's handle on the last conv layer (training/analysis.py):
                # a zero perturbation whose gradient is the activations', and
                # the activations. No-ops unless a caller passes perturbations
                # or makes intermediates mutable; init creates neither.
                x = self.perturb("last_conv", x)
                self.sow("intermediates", "last_conv", x)
            if pool:
                x = layers.max_pool(x, 3, 2)
        # [B, T', F', 256 * width]; T' = 1 for 63..94 frames, and pool bins repeat
        x = layers.adaptive_avg_pool(x, self.pool_size)  # [B, 6, 6, 256 * width]
        return layers.Classifier(
            layers.scaled(self.hidden, self.width),
            self.dropout,
            dtype=self.dtype,
            kernel_init=layers.torch_default_init,
            name="classifier",
        )(x, train=train)  # [B, hidden * width]
