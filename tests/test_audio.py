"""Audio reading: resampling at any rate (odd ones through the polyphase path) and one clear error per bad file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cta_rnn.audio import POLYPHASE_ABOVE, AudioError, load_audio, resample
from cta_rnn.timeline import BlockReader


@pytest.mark.parametrize("sr", [44100, 8000, 11127, 44056])
def test_resampling_keeps_a_tone_at_any_rate(sr: int) -> None:
    """A 440-Hz tone comes out as the same tone sampled at 16 kHz (11127 and 44056 Hz, whose reduced ratios are
    11127:16000 and 5507:2000, take the polyphase path; the rest torchaudio's)."""
    t = np.arange(sr) / sr
    out = resample(torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32)), sr, 16000)
    assert out.dtype == torch.float32 and out.numel() == math.ceil(sr * 16000 / sr)
    expect = np.sin(2 * np.pi * 440 * np.arange(out.numel()) / 16000)
    inner = slice(1600, -1600)  # away from the zero-padded ends
    # both filters pass 440 Hz with ripple well under 1e-2; a wrong rate or phase would be off by about 1
    np.testing.assert_allclose(out.numpy()[inner], expect[inner], atol=1e-2)
    g = math.gcd(sr, 16000)
    assert (max(sr // g, 16000 // g) > POLYPHASE_ABOVE) == (sr in (11127, 44056))


def test_an_empty_file_is_named_as_such(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for read in (load_audio, BlockReader):
        with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)"):
            read(empty)
    text = tmp_path / "notes.wav"
    text.write_text("hello")
    with pytest.raises(AudioError, match=r"notes\.wav: unreadable audio \("):
        load_audio(text)


def test_odd_rate_file_reads_like_its_resampled_samples(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(0, 0.1, 11127 * 2).astype(np.float32)
    path = tmp_path / "odd.wav"
    sf.write(path, x, 11127, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), resample(torch.from_numpy(x), 11127, 16000), atol=1e-7)
