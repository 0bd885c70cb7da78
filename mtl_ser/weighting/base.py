"""The interface every weighting method implements.

A method is a bundle of pure functions on plain arrays. The train step calls
them inside `jit`; tests call them directly.

Loss-based methods scalarise the loss vector with `combine`; the step then
differentiates the total once, as usual. Gradient-based methods set
`needs_grads=True` and get the per-task gradients of the shared parameters,
flattened to a matrix `grads [T, P]`, in `aggregate`; they return the direction
`update [P]` that replaces the plain gradient of the shared parameters. Only for
those methods does the step compute per-task gradients, so a loss-based method
costs nothing extra.
"""

from typing import Any, Callable, NamedTuple, Optional

import jax


class GradOutput(NamedTuple):
    """What a gradient-based method returns for one step.

    Attributes:
      update: [P] the direction written in place of the shared parameters'
        gradient (LibMTL's d); the optimizer then steps with it.
      weights: [T] the task weights the method reports (logged every step);
        LibMTL's `backward()` return value where that is meaningful, else the
        coefficients of `update` on the task gradients.
      head_weights: [T] multiplier on task t's loss gradient for its own,
        task-specific head (LibMTL's "decoder multiplier": 1 for most methods
        in its 'backward' mode, the weights themselves for Nash-MTL).
      state: the method's new non-learnable state.
      param_grads: gradient for the method's learnable params (same tree as
        params, {} if none); the main optimizer steps with it, as in LibMTL.
      rep_coeffs: [T] representation mode only (`rep_grad`, for methods with
        `rep_grad_ok`): the step back-propagates sum_t rep_coeffs[t] * dL_t/dz,
        per sample, through the trunk, as LibMTL's `z.backward(...)` does. In
        parameter mode it is ignored (return ones). [T, D] (GradDrop): one
        coefficient per task and feature of z, the same for every sample.
    """

    update: jax.Array
    weights: jax.Array
    head_weights: jax.Array
    state: Any
    param_grads: Any
    rep_coeffs: jax.Array


class Method(NamedTuple):
    """A weighting method as pure functions.

    Attributes:
      name: the config name.
      init: num_tasks -> (learnable params pytree, state pytree).
      combine: loss-based methods: (params, state, losses [T], *, step, rng) ->
        (total scalar, effective weights [T], new state). Differentiable in
        params and losses.
      aggregate: gradient-based methods: (params, state, losses [T],
        grads [T, P], *, step, rng) -> GradOutput.
      after_step: optional (params, state, losses_before [T], losses_after [T])
        -> new state, called with the losses recomputed on the same batch after
        the optimizer step (FAMO).
      rep_grad_ok: gradient methods only: whether the method may be given
        per-task gradients of the shared representation (summed over the
        batch, [T, D]) instead of the shared parameters.
      init_needs_width: gradient methods only: `init` is called as
        init(num_tasks, num_params=P), P the width of the gradient matrix
        (for state shaped like the gradients, e.g. DB-MTL's buffer).
      needs_layout: gradient methods only: `init` and `aggregate` also get
        layout=((module path, size), ...), one entry per shared parameter
        tensor in the order of the gradient's columns (GradVac's groups).
      batches_per_step: gradient methods only: how many independent batches
        the step draws (MoDo, SDMGrad: 3). Then `aggregate` gets losses
        [m, T] and grads [m, T, P], and the heads get head_weights[t] times
        their task's gradient summed over the m batches.
      rep_grad_only: the method is defined on the representation only
        (GradDrop): the step uses representation gradients whatever
        `weighting.rep_grad` says.
      signed_rep_grads: representation mode: the rows of `grads` are
        sum_b dL_t/dz_b * sign(z_b) instead of sum_b dL_t/dz_b (GradDrop's s_t).
    """

    name: str
    init: Callable[[int], tuple[Any, Any]]
    combine: Optional[Callable[..., tuple[Any, Any, Any]]] = None
    aggregate: Optional[Callable[..., GradOutput]] = None
    after_step: Optional[Callable[..., Any]] = None
    rep_grad_ok: bool = False
    init_needs_width: bool = False
    needs_layout: bool = False
    batches_per_step: int = 1
    rep_grad_only: bool = False
    signed_rep_grads: bool = False

    @property
    def needs_grads(self) -> bool:
        return self.aggregate is not None


def no_params(num_tasks: int):
    """`init` of a method with neither learnable params nor state."""
    del num_tasks
    return {}, {}
