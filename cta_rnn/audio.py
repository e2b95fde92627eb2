"""Audio reading for every stage: soundfile I/O, downmix to mono, resampling, sanity checks."""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cta_rnn.io_utils import one_line

POLYPHASE_ABOVE = 1000
"""Reduced rate ratios with a term above this (e.g. 11127 -> 16000 Hz: 11127:16000) are resampled polyphase."""


class AudioError(ValueError):
    """A file that cannot be used as speech input; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample (..., samples): torchaudio's windowed sinc, or scipy's polyphase filter for odd rates.

    torchaudio's kernel has (new/g) x (orig/g) taps (g = gcd of the rates): small for 44.1, 22.05 or 8 kHz,
    but about 700 MB and thousands of multiplications per sample for a rate like 11127 Hz, where
    ``resample_poly`` needs about 20. Both align output sample j with input time j * orig / new.
    """
    if orig_sr == new_sr:
        return wav
    g = math.gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    if max(up, down) <= POLYPHASE_ABOVE:
        return AF.resample(wav, orig_sr, new_sr)
    from scipy.signal import resample_poly  # here: importing scipy.signal costs every process 0.75 s

    out = resample_poly(wav.detach().cpu().numpy(), up, down, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(wav.device)


def unreadable(path: str | os.PathLike, err: Exception) -> AudioError:
    """The AudioError for a file soundfile cannot open: missing, empty (0 bytes) or not audio."""
    if not os.path.exists(path):
        return AudioError(path, "file not found")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return AudioError(path, "empty file (0 bytes)")
    return AudioError(path, f"unreadable audio ({one_line(err)})")


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, min_samples: int = 400) -> torch.Tensor:
    """Read a file as a mono float32 tensor at ``sample_rate``.

    Stereo is averaged, any rate is resampled, integer formats (16/24/32-bit) are scaled to [-1, 1].
    Raises AudioError for unreadable, empty, too-short (< ``min_samples`` after resampling, 25 ms at
    16 kHz) or non-finite audio.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise unreadable(path, err) from None
    if data.size == 0:
        raise AudioError(path, "empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(path, "non-finite samples (NaN or Inf)")
    wav = torch.from_numpy(data.mean(axis=1))
    wav = resample(wav, int(sr), sample_rate)
    if wav.numel() < min_samples:
        raise AudioError(path, f"too short ({wav.numel()} samples at {sample_rate} Hz, need >= {min_samples})")
    return wav.contiguous()
