"""The optax optimizer and learning-rate schedule, from the `optim` config."""

import jax
import jax.numpy as jnp
import optax


def make_schedule(cfg, num_steps: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay or constant."""
    peak = cfg.learning_rate
    if cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(
            peak, max(num_steps - cfg.warmup_steps, 1), alpha=cfg.end_lr_factor
        )
    elif cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(
            f"optim.schedule={cfg.schedule!r}: choose 'cosine' or 'constant'"
        )
    if cfg.warmup_steps <= 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
    return optax.join_schedules([warmup, decay], [cfg.warmup_steps])


def _decay_mask(params):
    """Weight decay on model kernels only: not biases, norms or loss weights."""

    def keep(path, x):
        names = [getattr(p, "key", "") for p in path]
        return names[0] == "model" and x.ndim > 1

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
    """Clipping + Adam / AdamW / SGD-momentum with the configured schedule.

    Args:
      cfg: the `optim` sub-config.
      num_steps: total training steps (for the schedule).

    Returns:
      An optax GradientTransformation over the whole `params` dict.
    """
    lr = make_schedule(cfg, num_steps)
    if cfg.name == "adam":
        tx = optax.adam(lr)
    elif cfg.name == "adamw":
        tx = optax.adamw(lr, weight_decay=cfg.weight_decay, mask=_decay_mask)
    elif cfg.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask),
            optax.sgd(lr, momentum=cfg.momentum),
        )
    else:
        raise ValueError(f"optim.name={cfg.name!r}: choose 'adam', 'adamw' or 'sgd'")
    if cfg.grad_clip > 0:
        tx = optax.chain(clip_by_global_norm(cfg.grad_clip), tx)
    return tx


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """optax.clip_by_global_norm, reusing a norm the caller already has.

    `update(..., global_norm=n)` scales by max_norm / n when n > max_norm, as
    optax does; the train step computes n once for its metrics and its
    finiteness check, so the update does not read every gradient again. Without
    `global_norm` it computes the norm itself. Its state is optax's (empty), so
    checkpoints of either restore into the other.

    Unlike optax (`select(clip, g / n * max_norm, g)`), every gradient is
    multiplied by one scalar factor, so the result can differ from optax's in
    the last bit. XLA does not copy a divide into several consumers, so optax's
    form made Adam's first- and second-moment loops read a clipped copy of each
    gradient that an extra loop wrote; a multiply is fused into both loops.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, *, global_norm=None, **extra):
        del params, extra
        norm = optax.tree.norm(updates) if global_norm is None else global_norm
        factor = jnp.where(norm >= max_norm, max_norm / norm, 1.0)
        return jax.tree.map(lambda g: g * factor.astype(g.dtype), updates), state

    return optax.GradientTransformationExtraArgs(init, update)
