"""Per-epoch mean losses, against the means computed by hand."""

import jax
import numpy as np

from mtl_ser.weighting import history


def test_each_finished_epoch_is_the_mean_of_its_steps():
    rng = np.random.default_rng(0)
    steps_per_epoch, epochs = 4, 4
    losses = rng.uniform(0.1, 2.0, (epochs * steps_per_epoch, 3)).astype(np.float32)
    means = losses.reshape(epochs, steps_per_epoch, 3).mean(axis=1)

    @jax.jit
    def step(h, s, batch_losses):
        h = history.start_step(h, s, steps_per_epoch)
        return history.add(h, batch_losses)

    h = history.init(3, keep=2)
    for s, batch_losses in enumerate(losses):
        h = step(h, s, batch_losses)
        e = s // steps_per_epoch
        assert int(history.epoch(s, steps_per_epoch)) == e
        assert int(h["finished"]) == e  # An epoch closes when the next begins.
        if e >= 1:
            np.testing.assert_allclose(h["first"], means[0], rtol=1e-6)
            np.testing.assert_allclose(h["recent"][0], means[e - 1], rtol=1e-6)
        else:
            np.testing.assert_array_equal(h["first"], 0.0)
        if e >= 2:
            np.testing.assert_allclose(h["recent"][1], means[e - 2], rtol=1e-6)
    # The running epoch holds the last epoch's sum so far.
    np.testing.assert_allclose(h["sum"], losses[-steps_per_epoch:].sum(0), rtol=1e-6)
    assert int(h["count"]) == steps_per_epoch


def test_a_step_that_starts_an_epoch_twice_closes_it_once():
    h = history.add(history.init(2), np.array([1.0, 3.0]))
    h = history.start_step(h, 5, steps_per_epoch=5)
    again = history.start_step(h, 5, steps_per_epoch=5)  # Nothing added since.
    for key in h:
        np.testing.assert_array_equal(again[key], h[key])
    np.testing.assert_allclose(h["recent"][0], [1.0, 3.0])
