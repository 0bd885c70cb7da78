"""Audio decoding and cleanup: file on disk -> float32 mono waveform.

This module knows nothing of JAX; it runs on the host in data-loading workers.
Every failure is reported as an `AudioError` naming the offending file, so that a
bad file in a corpus of thousands can be found from the log line alone.
"""

import importlib.util
import os
import struct
import warnings
from typing import Tuple

import librosa
import numpy as np
import soundfile as sf

# soxr is a librosa dependency and its "hq" mode is both fast and accurate; fall
# back to librosa's own default only where soxr is somehow missing.
_RESAMPLE_KWARGS = (
    {"res_type": "soxr_hq"} if importlib.util.find_spec("soxr") is not None else {}
)

# WAV writers that stream to a pipe cannot know the data size up front and leave
# one of these placeholders, so neither value means "truncated".
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)

# Half the telephone rate: below it no speech band is left to learn from, and a
# corrupt header's rate (0 Hz, 1 Hz) would divide by zero or upsample a file
# a thousandfold.
_MIN_SAMPLE_RATE = 4_000


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the problem."""


def load_audio(path: "str | os.PathLike[str]", sample_rate: int) -> np.ndarray:
    """Decodes an audio file into a float32 mono waveform at `sample_rate`.

    Multi-channel audio is downmixed by averaging the channels; audio at another
    rate is resampled with librosa.

    Args:
        path: path of the audio file (any format soundfile reads; others are
            tried through librosa.load).
        sample_rate: target sample rate in Hz.

    Returns:
        A 1-D float32 array of samples at `sample_rate`.

    Raises:
        AudioError: the file is missing, empty, unreadable, not audio, truncated,
            has a sample rate below 4 kHz, has no samples, holds NaN/Inf
            samples, or is entirely silent (zero).
        ValueError: `sample_rate` is not a positive integer.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    path = os.fspath(path)
    _check_file(path)
    _check_wav_truncation(path)
    wave, native_rate = _decode(path)
    return conform(wave, native_rate, sample_rate, path)


def conform(
    wave: np.ndarray, native_rate: int, sample_rate: int, name: str
) -> np.ndarray:
    """Decoded samples -> the float32 mono waveform at `sample_rate`.

    What load_audio does after decoding, for samples that come from elsewhere
    (e.g. mtl_ser.Predictor.predict).

    Args:
        wave: [frames, channels] float samples at `native_rate`.
        native_rate: their rate in Hz.
        sample_rate: the target rate in Hz.
        name: what the errors call the samples (a path, "waveform").

    Raises:
        AudioError: naming `name`: a rate below 4 kHz, no samples, NaN/Inf, all
            zero, or too short to resample.
    """
    if native_rate < _MIN_SAMPLE_RATE:
        raise AudioError(
            f"{name}: unsupported sample rate {native_rate} Hz "
            f"(at least {_MIN_SAMPLE_RATE} Hz)"
        )
    wave = _downmix(wave)
    _check_samples(wave, name)
    if native_rate != sample_rate:
        wave = librosa.resample(
            wave, orig_sr=native_rate, target_sr=int(sample_rate), **_RESAMPLE_KWARGS
        )
        # A handful of samples can shrink to nothing when downsampling.
        if wave.size == 0:
            raise AudioError(f"{name}: too short to resample to {sample_rate} Hz")
    return np.ascontiguousarray(wave, dtype=np.float32)


def trim_silence(
    wave: np.ndarray, top_db: float, frame_length: int, hop_length: int
) -> np.ndarray:
    """Removes leading and trailing silence from a waveform.

    Silence is any frame more than `top_db` below the loudest frame of the
    waveform (librosa.effects.trim with its default peak reference).

    Args:
        wave: 1-D waveform.
        top_db: threshold in dB below the peak under which a frame is silence.
        frame_length: analysis frame length in samples.
        hop_length: hop between analysis frames in samples.

    Returns:
        The trimmed waveform; never empty: the input itself is returned when
        trimming would remove everything (e.g. an all-zero input).
    """
    if wave.size == 0:
        return wave
    trimmed, _ = librosa.effects.trim(
        wave, top_db=top_db, frame_length=frame_length, hop_length=hop_length
    )
    # An empty utterance would break framing downstream; keeping the silence is
    # the lesser evil, and load_audio already rejects all-zero files.
    return trimmed if trimmed.size > 0 else wave


def _check_file(path: str) -> None:
    """Raises AudioError if `path` is not an existing, non-empty regular file."""
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _check_wav_truncation(path: str) -> None:
    """Raises AudioError if a RIFF/WAVE file holds fewer data bytes than declared.

    libsndfile silently clamps the frame count of a truncated WAV to the bytes
    present, so a cut-off download would otherwise load as a shorter, valid
    utterance. Non-WAV files and WAVs without a data chunk are left to the
    decoder.

    Args:
        path: path of the file to check.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = size - f.tell()
                if chunk_size not in _WAV_UNKNOWN_SIZES and chunk_size > available:
                    raise AudioError(
                        f"{path}: truncated WAV file (header declares {chunk_size} "
                        f"data bytes, only {available} present)"
                    )
                return
            # RIFF chunks are padded to an even number of bytes.
            f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


def _decode(path: str) -> Tuple[np.ndarray, int]:
    """Decodes `path` with soundfile, falling back to librosa.load.

    Args:
        path: path of the audio file.

    Returns:
        (samples [frames, channels] float32, native sample rate).
    """
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        return wave, int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_error:
        first_error = sf_error
    # Formats libsndfile lacks (e.g. AAC) may still decode through audioread.
    try:
        with warnings.catch_warnings():
            # librosa warns on every fallback and on its deprecated audioread path;
            # the outcome is reported through AudioError instead.
            warnings.simplefilter("ignore")
            wave, rate = librosa.load(path, sr=None, mono=False)
    # audioread raises a zoo of unrelated exception types for non-audio input.
    except Exception as fallback_error:
        raise AudioError(
            f"{path}: unreadable or not an audio file ({first_error}; "
            f"fallback decoder: {type(fallback_error).__name__} {fallback_error})"
        ) from fallback_error
    return np.atleast_2d(wave).T.astype(np.float32), int(rate)


def _downmix(wave: np.ndarray) -> np.ndarray:
    """Averages a [frames, channels] array over channels into a 1-D float32 array."""
    if wave.shape[1] == 1:
        return wave[:, 0]
    return wave.mean(axis=1, dtype=np.float32)


def _check_samples(wave: np.ndarray, path: str) -> None:
    """Raises AudioError if `wave` is empty, non-finite, or all zeros."""
    if wave.size == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{path}: audio contains non-finite samples (NaN/Inf)")
    if not np.any(wave):
        raise AudioError(f"{path}: audio is entirely zero (digital silence)")
