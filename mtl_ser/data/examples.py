"""Training and evaluation examples: one window of one utterance -> model input.

`RandomCrop` (training: speed copy, random crop, noise, normalisation,
SpecAugment, drawn in that order from the example's generator) and
`EvalWindow` (evaluation: a given window) are the Grain transforms that
pipeline's datasets map over a split's indices; they are picklable for Grain's
worker processes. An example is a dict: `x` [T, F, 1] float32 normalised log-mel
(or, for a split with waveform stores, the crop's `audio` and what the train step
needs to make its log-mels; see pipeline's docstring), `labels`, `masks` (task
name -> scalar) and `utt` (the utterance's index in its split).
"""

import dataclasses
from typing import TYPE_CHECKING

import grain
import numpy as np

from mtl_ser.data import augment as augment_lib
from mtl_ser.data import features

if TYPE_CHECKING:  # Annotations only: pipeline imports this module.
    from mtl_ser.data import pipeline


def _window(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """x[start:start+length], padded at the end with the utterance's floor."""
    out = x[start : start + length]
    if len(out) < length:
        pad = np.full((length - len(out), x.shape[1]), x.min(), x.dtype)
        out = np.concatenate([out, pad], 0)
    return out


class _Example:
    """Reads one window of one utterance of a split (picklable, for Grain)."""

    def __init__(self, split: "pipeline.SplitData", data: "pipeline.Data", crop: int):
        self.split, self.crop = split, crop
        self.mean, self.std, self.targets = data.mean, data.std, data.target_stats

    def example(self, i: int, start: int) -> dict:
        x = self.split.store.get(self.split.rows[i])
        return self.normalised(i, _window(x, start, self.crop))

    def normalised(self, i: int, window: np.ndarray) -> dict:
        """The example of utterance i with log-mel `window` [T, F] (in dB)."""
        x = (window - self.mean) / self.std
        return {"x": x[..., None].astype(np.float32), **self.labelled(i)}  # [T, F, 1]

    def labelled(self, i: int) -> dict:
        """Utterance i's labels, masks and index: an example without inputs."""
        labels = {k: v[i] for k, v in self.split.labels.items()}
        for name, (mean, std) in self.targets.items():
            labels[name] = np.float32((labels[name] - mean) / std)
        return {
            "labels": labels,
            "masks": {k: v[i] for k, v in self.split.masks.items()},
            "utt": np.int32(i),
        }


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masking (SpecAugment, Park et al. 2019).

    Each of `time_masks` masks sets w consecutive frames to 0, with w uniform
    in [0, time_width]; each of `freq_masks` masks sets w consecutive mel bands
    to 0, w uniform in [0, freq_width]. Applied to normalised log-mels, where 0
    is the training mean of the band.
    """

    time_masks: int = 0
    time_width: int = 0
    freq_masks: int = 0
    freq_width: int = 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Masks a copy of x [T, F, ...]."""
        x = np.array(x)
        for axis, count, width in (
            (0, self.time_masks, self.time_width),
            (1, self.freq_masks, self.freq_width),
        ):
            size = x.shape[axis]
            for _ in range(count):
                w = int(rng.integers(0, min(width, size) + 1))
                start = int(rng.integers(0, size - w + 1))
                index = [slice(None)] * x.ndim
                index[axis] = slice(start, start + w)
                x[tuple(index)] = 0.0
        return x


def centre_start(length: int, crop: int) -> int:
    """Start of the centre window of `crop` frames (0 when the utterance is short)."""
    return max(length - crop, 0) // 2


class RandomCrop(_Example, grain.transforms.RandomMap):
    """Training example of utterance i, drawn in this order from its generator:
    its speed (the original or one of `split.speed_copies`, uniformly), a
    random crop of `crop` frames (with `fixed`, the centre crop), the optional
    `noise` on the crop's dB, and after normalisation the optional `augment`.
    An augmentation that is off draws nothing, so that without speed copies
    the crops are those of a pipeline without them.

    A split with `waveforms` gives audio examples (`audio_example`) of the
    same draws; `augment` then runs in the train step and must be None."""

    def __init__(
        self,
        split,
        data,
        crop,
        augment: "SpecAugment | None" = None,
        fixed=False,
        noise: "augment_lib.MelNoise | None" = None,
    ):
        super().__init__(split, data, crop)
        if split.waveforms and augment is not None:
            raise ValueError(
                "SpecAugment of audio crops runs in the train step "
                "(features.spec_augment_jnp): pass augment=None"
            )
        self.augment, self.fixed, self.noise = augment, fixed, noise

    def random_map(self, i, rng: np.random.Generator):
        if self.split.waveforms:
            return self.audio_example(i, rng)
        mel = self.speed_copy(i, rng)  # Before the crop: lengths differ.
        length = len(mel)
        start = int(rng.integers(0, max(length - self.crop, 0) + 1))
        if self.fixed:  # The draw above still happens: augment's stay the same.
            start = centre_start(length, self.crop)
        window = _window(mel, start, self.crop)
        if self.noise is not None:
            window = self.noise(window, rng)
        example = self.normalised(i, window)
        if self.augment is not None:
            example["x"] = self.augment(example["x"], rng)
        return example

    def speed_copy(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Utterance i's log-mel [T, F] at a speed drawn uniformly.

        Draws nothing when the split has no speed copies.
        """
        original = self.split.store.get(self.split.rows[i])
        copies = self.split.speed_copies
        if not copies:
            return original
        k = int(rng.integers(0, len(copies) + 1))  # 0: the original.
        if k == 0 or copies[k - 1].rows[i] < 0:
            return original
        return copies[k - 1].store.get(copies[k - 1].rows[i])

    def audio_example(self, i: int, rng: np.random.Generator) -> dict:
        """Utterance i's example with the samples of its crop instead of `x`.

        Draws what random_map draws, in its order: the speed (as speed_copy),
        the crop start from the log-mel's frame count, the noise (real white
        noise on the samples, `_add_white_noise`); so the crop's frames are
        those the log-mel path cuts for the same generator.
        """
        copies = self.split.waveforms
        copy = copies[0]
        if len(copies) > 1:  # The draw speed_copy makes; 0: the original.
            k = int(rng.integers(0, len(copies)))
            copy = copies[k] if copies[k].rows[i] >= 0 else copies[0]
        row, store = copy.rows[i], copy.store
        wave = store.get(row)
        n_fft, hop = store.params["n_fft"], store.params["hop_length"]
        length = features.num_frames(len(wave), n_fft, hop)
        start = int(rng.integers(0, max(length - self.crop, 0) + 1))
        if self.fixed:  # As random_map: the draw above still happens.
            start = centre_start(length, self.crop)
        samples = features.crop_samples(wave, start, self.crop, n_fft, hop)
        if self.noise is not None:
            first = start * hop - n_fft // 2  # The crop's first sample in `wave`.
            real = slice(max(-first, 0), max(min(len(wave) - first, len(samples)), 0))
            samples = _add_white_noise(samples, real, self.noise, rng)
        return {
            "audio": samples,  # [S]
            "peak_db": store.peak_db[row],
            "floor_db": store.floor_db[row],
            "frames": np.int32(min(length - start, self.crop)),
            **self.labelled(i),
        }


def _add_white_noise(
    samples: np.ndarray,
    real: slice,
    noise: augment_lib.MelNoise,
    rng: np.random.Generator,
) -> np.ndarray:
    """Crop samples plus white noise, drawn as MelNoise draws it, but real.

    With probability noise.prob, Gaussian white noise at an SNR drawn uniformly
    from noise.snr_db, relative to the mean power of the waveform's samples in
    the crop (`real`); the centring and end padding zeros stay zero, as noise
    added to the waveform before the STFT would leave them. The truth that
    MelNoise approximates in the mel domain, where the signal's power is that
    of the crop's mel range (50 Hz to fmax by default) rather than all of it.
    """
    if rng.random() >= noise.prob:
        return samples
    snr = rng.uniform(*noise.snr_db)
    signal = samples[real]
    power = np.mean(np.square(signal, dtype=np.float64)) if signal.size else 0.0
    scale = np.sqrt(power * 10.0 ** (-snr / 10.0))
    out = samples.copy()
    out[real] += (scale * rng.standard_normal(signal.size)).astype(np.float32)
    return out


class EvalWindow(_Example, grain.transforms.Map):
    """Evaluation example: window (utterance index, start frame)."""

    def map(self, window):
        i, start = int(window[0]), int(window[1])
        return self.example(i, start)
