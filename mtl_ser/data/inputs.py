"""The model input of a training batch, made in the jitted train step.

The host sends crops (or only where to find them: data.device_cache), and the
step makes the input [B, T, F, 1] with batch operations that cost little next
to the convolutions, in this order:
  1. the crops' log-mels in dB: the batch's own `db`; gathered from the
     training split's frames resident on the device (`gather_crops`, with the
     batch's `first`, `frames`, `floor`); or, for `audio` batches
     (data.features_on_device), computed from their samples
     (features.crop_features_jnp), after real white noise on the samples;
  2. white noise in the mel power domain (data.noise_prob; augment.MelNoise);
  3. normalisation by the training split's band statistics, or by each
     example's own (the batch's `mean` and `std`: data/statistics.py);
  4. SpecAugment (features.spec_augment_jnp).
A batch that carries `x` already holds the model input (benchmarks, tests).
The noise and masks are drawn from the step's key, so they follow the step.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mtl_ser.data import augment, features


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the train step needs to make a batch's model input.

    Attributes:
      crop: frames per crop, T.
      mean, std: [F] the training split's band statistics (host constants).
      noise: augment.MelNoise, or None (data.noise_prob = 0).
      spec_augment: augment.SpecAugment, or None.
      log_mel: features.log_mel's settings, for audio batches; None otherwise.
    """

    crop: int
    mean: np.ndarray
    std: np.ndarray
    noise: Optional[augment.MelNoise] = None
    spec_augment: Optional[augment.SpecAugment] = None
    log_mel: Optional[dict] = None


def gather_crops(store, first, frames, floor, crop: int) -> jax.Array:
    """Crops of `crop` frames of the device store, as batches.gather_frames.

    Args:
      store: [M, F] the resident log-mels (batches.device_frames).
      first: [B] int, each crop's first frame in `store`.
      frames: [B] int >= 1, its frames inside the utterance.
      floor: [B] the padding past them (the utterance's minimum).

    Returns:
      [B, T, F] float32, equal to the host's crops of the same draws.
    """
    j = jnp.arange(crop)
    rows = first[:, None] + jnp.minimum(j[None, :], frames[:, None] - 1)
    db = jnp.take(store, rows, axis=0, mode="clip")  # [B, T, F]
    inside = j[None, :, None] < frames[:, None, None]
    return jnp.where(inside, db, floor[:, None, None].astype(db.dtype))


def model_inputs(batch: dict, store, key: jax.Array, spec: InputSpec) -> jax.Array:
    """The model input [B, T, F, 1] of a training batch (module docstring).

    Args:
      batch: a training batch (data/batches.py), or one with `x`.
      store: the device store, or None.
      key: the step's input key (noise and SpecAugment).
      spec: the InputSpec.
    """
    if "x" in batch:
        return batch["x"]
    noise_key, augment_key = jax.random.split(key)
    mean, std = spec.mean, spec.std
    if "mean" in batch:  # Per-example statistics [B, F].
        mean, std = batch["mean"][:, None, :], batch["std"][:, None, :]
    if "audio" in batch:
        audio = batch["audio"]
        if spec.noise is not None:
            audio = spec.noise.on_audio(audio, batch["real"], noise_key)
        x = features.crop_features_jnp(
            audio,
            batch["peak_db"],
            mean,
            std,
            batch["frames"],
            batch["floor_db"],
            **spec.log_mel,
        )
    else:
        if "db" in batch:
            db = batch["db"]
        else:
            if store is None:
                raise ValueError("a batch of store indices needs the device store")
            db = gather_crops(
                store, batch["first"], batch["frames"], batch["floor"], spec.crop
            )
        if spec.noise is not None:
            db = spec.noise.on_log_mels(db, noise_key)
        x = ((db - mean) / std)[..., None]
    if spec.spec_augment is None:
        return x
    masks = dataclasses.asdict(spec.spec_augment)
    return features.spec_augment_jnp(x, augment_key, **masks)
