"""The interface every weighting method implements."""

from typing import Any, Callable, NamedTuple


class Method(NamedTuple):
    """A weighting method as a pair of pure functions.

    Attributes:
      name: the config name.
      init: num_tasks -> (learnable params pytree, state pytree).
      combine: (params, state, losses [T], *, step, rng) -> (total scalar,
        effective weights [T], new state). Differentiable in params and losses.
      needs_grads: whether the method needs per-task gradients (none yet).
    """

    name: str
    init: Callable[[int], tuple[Any, Any]]
    combine: Callable[..., tuple[Any, Any, Any]]
    needs_grads: bool = False
