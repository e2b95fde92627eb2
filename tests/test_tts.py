"""Tests for the espeak-ng wrapper: audio comes out, prosody knobs act, output is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from cta_rnn.tts import TTSError, synthesize, voice_exists

SR = 16000
TEXT = "The birch canoe slid on the smooth planks near the old mill."


def median_f0(x: np.ndarray, sr: int = SR, fmin: float = 60, fmax: float = 500) -> float:
    """Crude F0: median autocorrelation peak over voiced 40 ms frames."""
    fl, hop, lo, hi = int(0.04 * sr), int(0.01 * sr), int(sr / fmax), int(sr / fmin)
    f0 = []
    for i in range(0, len(x) - fl, hop):
        fr = x[i : i + fl] - x[i : i + fl].mean()
        ac = np.correlate(fr, fr, "full")[fl - 1 :]
        if ac[0] <= 1e-4:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / ac[0] > 0.5:
            f0.append(sr / lag)
    return float(np.median(f0))


def test_output_is_float_audio() -> None:
    x = synthesize("Hello there.")
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.3 < len(x) / SR < 3
    assert np.abs(x).max() <= 1.0 and np.sqrt(np.mean(x**2)) > 0.01


def test_duration_grows_with_text_and_falls_with_rate() -> None:
    short, long = synthesize("Hello."), synthesize(TEXT)
    assert len(long) > 2 * len(short)
    slow, fast = synthesize(TEXT, rate=120), synthesize(TEXT, rate=240)
    assert len(slow) > 1.5 * len(fast)


def test_pitch_changes_f0() -> None:
    low, high = median_f0(synthesize(TEXT, pitch=30)), median_f0(synthesize(TEXT, pitch=80))
    assert high > 1.2 * low


def test_sample_rate_and_word_gap() -> None:
    assert abs(len(synthesize(TEXT, sample_rate=22050)) / len(synthesize(TEXT)) - 22050 / SR) < 0.01
    assert len(synthesize(TEXT, word_gap=5)) > len(synthesize(TEXT)) + 0.4 * SR


def test_deterministic() -> None:
    kw = {"voice": "en-us+f2", "pitch": 68, "pitch_range": 175, "rate": 185, "amplitude": 115}
    a = synthesize(TEXT, **kw)
    synthesize("Something else in between, to change the engine state.", voice="en+m3")
    assert np.array_equal(a, synthesize(TEXT, **kw))


def test_voices_and_errors() -> None:
    assert voice_exists("en-gb-scotland+m3") and voice_exists("en+f1")
    assert not voice_exists("en-us+zz9") and not voice_exists("xx-nonexistent")
    with pytest.raises(TTSError, match="not found"):
        synthesize("Hello.", voice="xx-nonexistent")
    with pytest.raises(ValueError):
        synthesize("  ")
