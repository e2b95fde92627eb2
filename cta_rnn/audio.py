"""Audio reading for every stage: soundfile I/O, downmix to mono, resampling, sanity checks."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """A file that cannot be used as speech input; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (..., samples) with torchaudio's windowed-sinc (pure PyTorch)."""
    if orig_sr == new_sr:
        return wav
    return AF.resample(wav, orig_sr, new_sr)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, min_samples: int = 400) -> torch.Tensor:
    """Read a file as a mono float32 tensor at ``sample_rate``.

    Stereo is averaged, any rate is resampled, integer formats (16/24/32-bit) are scaled to [-1, 1].
    Raises AudioError for unreadable, empty, too-short (< ``min_samples`` after resampling, 25 ms at
    16 kHz) or non-finite audio.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        if not os.path.exists(path):
            raise AudioError(path, "file not found") from None
        raise AudioError(path, f"unreadable audio ({err})") from None
    if data.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(path, "non-finite samples (NaN or Inf)")
    wav = torch.from_numpy(data.mean(axis=1))
    wav = resample(wav, int(sr), sample_rate)
    if wav.numel() < min_samples:
        raise AudioError(path, f"too short ({wav.numel()} samples at {sample_rate} Hz, need >= {min_samples})")
    return wav.contiguous()
