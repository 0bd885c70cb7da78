"""A few real train steps of an Experiment, for tests that compare runs."""

import jax

from mtl_ser.training import experiment, sharding


def train_steps(config, num_steps, *, devices=1):
    """Runs `num_steps` steps on the first `devices` devices.

    Returns (the Experiment, the last state, each step's metrics on the host).
    """
    mesh = sharding.make_mesh(jax.devices()[:devices])
    exp = experiment.Experiment(config, mesh=mesh, verbose=False)
    it, state, history = exp.train_iterator(), exp.state, []
    for _ in range(num_steps):
        batch = sharding.from_process_local(next(it), exp.mesh)
        state, metrics = exp.train_fn(state, batch, exp.store)
        history.append(jax.device_get(metrics))
    return exp, state, history
