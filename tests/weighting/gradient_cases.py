"""What the tests of GradNorm, IMTL, Aligned-MTL, Nash-MTL and DB-MTL share:
their config, random gradient draws and one aggregate call."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

RNG = jax.random.PRNGKey(0)


SHAPES = [(2, 6), (3, 9), (5, 12)]  # (T, P) for the random draws.


def config(**kw):
    base = dict(
        name="",
        rep_grad=False,
        gradnorm_alpha=1.5,
        nash_update_every=1,
        nash_iterations=20,
        nash_max_norm=1.0,
        db_beta=0.9,
        db_beta_sigma=0.0,
    )
    return ml_collections.ConfigDict({**base, **kw})


def build(builder, steps_per_epoch=1, **cfg):
    return builder(config(**cfg), (), steps_per_epoch)


def draws(seed=0, conflict=False):
    """(T, G [T, P], losses [T]) per shape, exactly representable in float32."""
    rng = np.random.default_rng(seed)
    for num_tasks, num_params in SHAPES:
        grads = rng.normal(size=(num_tasks, num_params))
        grads *= np.exp(rng.normal(0, 0.7, (num_tasks, 1)))
        if conflict:  # Pull some tasks against a common direction.
            base = rng.normal(size=num_params)
            grads += 0.8 * base * np.where(np.arange(num_tasks) % 2, -1, 1)[:, None]
        grads = grads.astype(np.float32).astype(np.float64)
        losses = rng.uniform(0.2, 2.0, num_tasks).astype(np.float32).astype(float)
        yield num_tasks, grads, losses


def call(method, params, state, losses, grads, step=0):
    return method.aggregate(
        params,
        state,
        jnp.asarray(losses, jnp.float32),
        jnp.asarray(grads, jnp.float32),
        step=jnp.asarray(step, jnp.int32),
        rng=RNG,
    )


def init(method, num_tasks, num_params):
    if method.name == "db_mtl":
        return method.init(num_tasks, num_params=num_params)
    return method.init(num_tasks)


def tree_sig(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)
