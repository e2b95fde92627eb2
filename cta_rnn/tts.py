"""Offline text-to-speech: espeak-ng (from the PyPI package ``espeakng-loader``) driven through ctypes.

Prosody follows the espeak-ng command line: base pitch (``-p``), rate (``-s``), amplitude (``-a``)
and word gap (``-g``) are engine parameters; the pitch range is SSML ``<prosody range="N%">``.
The library runs in synchronous mode with a synth callback inside a helper process
(:mod:`cta_rnn._espeak_worker`, started once per process) that forks per utterance, so every
utterance starts from the same engine state: equal arguments give identical samples. Output is
resampled from espeak's 22.05 kHz to ``sample_rate``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

__all__ = ["TTSError", "native_sample_rate", "synthesize", "voice_exists"]

# espeak_PARAMETER from speak_lib.h
_RATE, _VOLUME, _PITCH, _RANGE, _PUNCTUATION, _CAPITALS, _WORDGAP = 1, 2, 3, 4, 5, 6, 7
_NOT_FOUND = 2  # helper status for espeak's EE_NOT_FOUND


class TTSError(RuntimeError):
    """espeak-ng could not be loaded, initialised or asked to speak."""


def _paths() -> tuple[Path, Path]:
    """libespeak-ng and its data folder, from ``espeakng-loader``."""
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TTSError("espeak-ng not found: `pip install espeakng-loader` (ships libespeak-ng and its data)") from e
    lib, data = Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())
    if not lib.is_file() or not (data / "phontab").is_file():
        raise TTSError(f"espeak-ng library or data missing: {lib}, {data}")
    return lib, data


class _Engine:
    """Client of one helper process; ``lock`` serialises requests from threads."""

    def __init__(self) -> None:
        lib, self.data_path = _paths()
        worker = Path(__file__).with_name("_espeak_worker.py")
        # the data folder's parent contains ``espeak-ng-data``: accepted by every espeak-ng version
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(worker), str(lib), str(self.data_path.parent)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.pid = os.getpid()
        self.lock = threading.Lock()
        status, payload = self._read()
        if status != 0:
            raise TTSError(f"cannot start espeak-ng from {lib}: {payload.decode(errors='replace')}")
        self.sample_rate = int(payload)
        atexit.register(self.close)

    def _read(self) -> tuple[int, bytes]:
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise TTSError(f"espeak-ng helper process died (exit code {self.proc.poll()})")
        status, n = struct.unpack("<iI", head)
        payload = self.proc.stdout.read(n)
        if len(payload) < n:
            raise TTSError("espeak-ng helper process died mid-answer")
        return status, payload

    def request(self, req: dict) -> tuple[int, bytes]:
        """Send one request, return (status, payload)."""
        with self.lock:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        """Stop the helper process (it exits at end of input)."""
        if self.proc.poll() is None and self.pid == os.getpid():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def voice_exists(self, voice: str) -> bool:
        """True if the base voice and its ``+variant`` (if any) are installed."""
        base, _, variant = voice.partition("+")
        if variant and not (self.data_path / "voices" / "!v" / variant).is_file():
            return False
        return self.request({"voice": base, "check_only": True})[0] == 0


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None or _ENGINE.pid != os.getpid():  # a forked process needs its own helper
            _ENGINE = _Engine()
        return _ENGINE


@functools.lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> Callable:
    """torchaudio's sinc resampler (``torchaudio.functional.resample``) with its kernel computed once."""
    import torchaudio.transforms as T

    return T.Resample(orig, new)


def native_sample_rate() -> int:
    """espeak-ng's output rate (22050 Hz)."""
    return _engine().sample_rate


def voice_exists(voice: str) -> bool:
    """True if ``voice`` (e.g. ``en-us+f2``) can be used."""
    return _engine().voice_exists(voice)


def synthesize(
    text: str,
    voice: str = "en-us",
    pitch: int = 50,
    pitch_range: float = 100,
    rate: int = 165,
    amplitude: int = 100,
    word_gap: int = 0,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Speak ``text``; float32 mono in [-1, 1] at ``sample_rate``. Deterministic for equal arguments.

    pitch: base pitch 0-99; pitch_range: percent of the voice's range (SSML prosody range);
    rate: words per minute (80-450); amplitude: 0-200; word_gap: pause between words in 10 ms units.
    Integer knobs are clipped to espeak's valid ranges.
    """
    if not text.strip():
        raise ValueError("synthesize: empty text")
    eng = _engine()
    variant = voice.partition("+")[2]
    if variant and not (eng.data_path / "voices" / "!v" / variant).is_file():
        raise TTSError(f"espeak-ng voice variant {variant!r} of {voice!r} not found in {eng.data_path}/voices/!v")
    params = [
        (_RATE, int(np.clip(rate, 80, 450))),
        (_VOLUME, int(np.clip(amplitude, 0, 200))),
        (_PITCH, int(np.clip(pitch, 0, 99))),
        (_RANGE, 50),
        (_WORDGAP, max(0, int(word_gap))),
        (_PUNCTUATION, 0),
        (_CAPITALS, 0),
    ]
    ssml = f'<speak><prosody range="{max(0.0, float(pitch_range)):.1f}%">{escape(text)}</prosody></speak>'
    status, payload = eng.request({"voice": voice, "params": params, "ssml": ssml})
    if status == _NOT_FOUND:
        raise TTSError(f"espeak-ng voice {voice!r} not found in {eng.data_path}")
    if status != 0:
        raise TTSError(f"espeak-ng failed on {text!r} with voice {voice!r}: {payload.decode(errors='replace')}")
    if not payload:
        raise TTSError(f"espeak-ng produced no audio for {text!r} with voice {voice!r}")
    audio = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != eng.sample_rate:
        import torch

        with torch.no_grad():
            audio = _resampler(eng.sample_rate, sample_rate)(torch.from_numpy(audio)).numpy()
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
