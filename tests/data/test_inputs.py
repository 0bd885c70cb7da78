"""The train step's model input (data/inputs): normalisation and SpecAugment."""

import jax
import numpy as np

from mtl_ser.data import pipeline
from mtl_ser.training import build, experiment


def test_the_step_normalises_crops_and_masks_them_with_spec_augment(data):
    """The model input is made in the train step: (db - mean) / std, then
    SpecAugment's stripes, drawn from the step's key."""
    from mtl_ser.data import augment, inputs

    split, crop = data.splits["train"], 64
    batch = next(
        iter(pipeline.train_dataset(split, data, crop=crop, batch_size=8, seed=3))
    )
    spec = inputs.InputSpec(crop, data.mean, data.std)
    key = jax.random.key(0)
    plain = np.asarray(inputs.model_inputs(batch, None, key, spec))
    np.testing.assert_allclose(
        plain[..., 0], (batch["db"] - data.mean) / data.std, rtol=1e-6, atol=1e-6
    )
    masks = augment.SpecAugment(time_masks=2, time_width=10, freq_masks=1, freq_width=5)
    spec = inputs.InputSpec(crop, data.mean, data.std, spec_augment=masks)
    masked = np.asarray(inputs.model_inputs(batch, None, key, spec))
    again = np.asarray(inputs.model_inputs(batch, None, key, spec))
    np.testing.assert_array_equal(masked, again)  # The key decides.
    assert np.any(masked != plain)
    kept = masked != 0
    np.testing.assert_array_equal(masked[kept], plain[kept])  # Only masking.
    zero_frames = np.all(masked == 0, axis=(2, 3)).sum(1)
    zero_bands = np.all(masked == 0, axis=(1, 3)).sum(1)
    assert zero_frames.max() <= 20 and zero_bands.max() <= 5


def test_config_turns_spec_augment_on_in_the_step(smoke_config):
    from mtl_ser.data import inputs

    smoke_config.data.freq_masks, smoke_config.data.freq_mask_bands = 2, 6
    exp = experiment.Experiment(smoke_config, verbose=False)
    spec = build.input_spec(smoke_config, (exp.data.mean, exp.data.std))
    batch = next(exp.train_iterator())
    x = np.asarray(inputs.model_inputs(batch, None, jax.random.key(1), spec))
    zero_bands = np.all(x == 0, axis=(1, 3)).sum(axis=1)  # Per example.
    assert zero_bands.max() > 0 and zero_bands.max() <= 12
