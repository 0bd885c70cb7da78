"""What the tests of MGDA, PCGrad and CAGrad share: their config, random
gradients, and one jitted aggregate per method and setting (zero-padded to
one width, so each number of tasks compiles once)."""

import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

KEY = jax.random.PRNGKey(0)


def config(**kw):
    base = dict(
        name="mgda",
        rep_grad=False,
        mgda_normalization="none",
        cagrad_alpha=0.5,
        cagrad_rescale=1,
    )
    return ml_collections.ConfigDict({**base, **kw})


def grads(seed, num_tasks, size, conflict=False, spread=0.5):
    """Random per-task gradients [T, P] in float64 (norms lognormal(spread))."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(num_tasks, size))
    g *= rng.lognormal(sigma=spread, size=(num_tasks, 1))
    if conflict:  # Task 1 nearly opposite to task 0.
        g[1] = -0.8 * g[0] + 0.3 * rng.normal(size=size) * np.linalg.norm(g[0]) / 4
    return g


JITTED = {}


TRACES = collections.Counter()


def trace_key(method):
    return method.name, tuple(sorted(getattr(method.aggregate, "keywords", {}).items()))


def jitted(method):
    """One jitted aggregate per method and setting (compiles are the cost)."""
    key = trace_key(method)
    if key not in JITTED:

        def aggregate(*args, **kwargs):
            TRACES[key] += 1
            return method.aggregate(*args, **kwargs)

        JITTED[key] = jax.jit(aggregate)
    return JITTED[key]


WIDTH = 24  # Every case is zero-padded to this P: one compile per T.


def aggregate(method, grads, losses=None, rng=KEY, step=0):
    """Runs the jitted aggregate; zero columns change nothing but the width."""
    grads = np.asarray(grads, np.float32)
    num, size = grads.shape
    padded = np.zeros((num, WIDTH), np.float32)
    padded[:, :size] = grads
    if losses is None:
        losses = np.ones(num)
    params, state = method.init(num)
    out = jitted(method)(
        params,
        state,
        jnp.asarray(losses, jnp.float32),
        jnp.asarray(padded),
        step=jnp.asarray(step, jnp.int32),
        rng=rng,
    )
    np.testing.assert_array_equal(out.update[size:], 0)
    return out._replace(update=out.update[:size])
