"""Multitask model: a shared trunk with one linear head per task."""

import jax
import jax.numpy as jnp
from flax import linen as nn

from mtl_ser.models import layers


def _check_head_sizes(head_sizes: tuple[tuple[str, int], ...]) -> None:
    """Raises ValueError for empty, duplicate or non-positive task heads."""
    if not head_sizes:
        raise ValueError("head_sizes: at least one task head is needed")
    names = [name for name, _ in head_sizes]
    if len(set(names)) != len(names):
        raise ValueError(f"head_sizes: duplicate task names in {names}")
    for name, size in head_sizes:
        if int(size) < 1:
            raise ValueError(f"head_sizes: task {name!r} has output size {size}")


def is_head_path(path) -> bool:
    """Whether a param-tree key path (from tree_*_with_path) is in a task head.

    Everything else in the model's params is shared between tasks.
    """
    return str(getattr(path[0], "key", path[0])).startswith("head_")


class MultiTaskModel(nn.Module):
    """A shared trunk and one Dense head per task on its embedding.

    The heads compute in float32 whatever the trunk's dtype: they are tiny,
    and the losses want float32 logits.

    Attributes:
        trunk: module mapping `(x, train=...)` to an embedding `[B, D]`.
        head_sizes: `(task name, output size)` pairs; the size is the number of
          classes for classification and 1 for regression.
        deltas: time derivatives appended to the input as channels before the
          trunk (`layers.time_deltas`): 0 none, 1 deltas, 2 deltas and
          accelerations.
    """

    trunk: nn.Module
    head_sizes: tuple[tuple[str, int], ...]
    deltas: int = 0

    def setup(self):
        _check_head_sizes(self.head_sizes)
        # A dict attribute names its modules head_{task}.
        self.head = {
            name: nn.Dense(
                int(size),
                dtype=jnp.float32,
                param_dtype=jnp.float32,
                # Small weights start every task near uniform / zero output,
                # so no task's loss dominates the first steps.
                kernel_init=nn.initializers.normal(stddev=0.01),
                bias_init=nn.initializers.zeros,
            )
            for name, size in self.head_sizes
        }

    def embed(self, x: jax.Array, *, train: bool) -> jax.Array:
        """The shared representation: float32 trunk output `[B, D]`."""
        if self.deltas:
            x = layers.time_deltas(x, self.deltas)  # [B, T, F, C * (deltas + 1)]
        return self.trunk(x, train=train).astype(jnp.float32)

    def heads(self, embedding: jax.Array) -> dict[str, jax.Array]:
        """Each task's float32 output `[B, size]` from the embedding."""
        return {name: self.head[name](embedding) for name, _ in self.head_sizes}

    def __call__(
        self, x: jax.Array, *, train: bool
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """Runs the trunk and every head.

        Args:
            x: input `[B, T, F, C]`.
            train: enables dropout and BatchNorm batch statistics.

        Returns:
            `(outputs, embedding)`: outputs maps each task name to float32
            `[B, size]`; embedding is the float32 trunk output `[B, D]`.
        """
        embedding = self.embed(x, train=train)  # [B, D]
        return self.heads(embedding), embedding
