"""Voice activity detection for ``cta-rnn timeline``, fed block by block (a recording is never held whole).

Every detector takes consecutive 16-kHz mono blocks (:meth:`feed`) and returns speech regions in seconds at the
end (:meth:`finish`); what it keeps meanwhile is one small number per frame (about 31 or 50 per second), never
samples.

- ``silero``: Silero VAD (PyPI ``silero-vad``, MIT; the model ships inside the wheel, so it runs offline). The
  model is stateful over 512-sample chunks; its chunk probabilities are turned into regions by the package's own
  ``get_speech_timestamps_from_probs`` (threshold, minimum speech and silence durations, padding).
- ``energy``: frame RMS in dB (20-ms frames) relative to the recording's 99th percentile (its loud speech),
  with hysteresis: a region is entered above ``loud - on_db`` and left below ``loud - off_db``, but never
  under ``on_snr``/``off_snr`` dB above the 10th percentile (its noise floor: a recording that is mostly
  silence keeps its pauses) nor under ``floor_db`` dBFS (a silent file has no speech); gaps under
  ``min_silence`` are filled, regions under ``min_speech`` dropped, ``pad`` added each side.
- ``none``: the whole recording is one region.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch
from scipy import ndimage

VAD_CHOICES = ("silero", "energy", "none")
SAMPLE_RATE = 16000
MIN_SPEECH_S = 0.25
"""Speech regions shorter than this are dropped."""
MIN_SILENCE_S = 0.3
"""Pauses shorter than this do not end a speech region."""
PAD_S = 0.1
"""Added before and after each speech region (clipped to the recording)."""

Region = tuple[float, float]


def silero_available() -> bool:
    """Whether the ``silero-vad`` package can be imported."""
    return importlib.util.find_spec("silero_vad") is not None


def load_silero() -> torch.jit.ScriptModule:
    """Silero VAD's TorchScript model from the package's data files (offline).

    ``silero_vad`` sets torch's intra-op threads to 1 when imported; the caller's thread count is restored.
    """
    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)

    with warnings.catch_warnings():  # torch.jit.load and importlib.resources.path are deprecated (both work)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad.load_silero_vad()


class SileroVAD:
    """Silero VAD over a stream of 16-kHz blocks: chunk probabilities, regions at the end."""

    chunk = 512

    def __init__(
        self,
        threshold: float = 0.5,
        min_speech: float = MIN_SPEECH_S,
        min_silence: float = MIN_SILENCE_S,
        pad: float = PAD_S,
        model: torch.jit.ScriptModule | None = None,
    ) -> None:
        self.model = model if model is not None else load_silero()
        self.threshold, self.min_speech, self.min_silence, self.pad = threshold, min_speech, min_silence, pad
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far (model state included)."""
        self.model.reset_states()
        self.probs: list[float] = []
        self._rest = torch.zeros(0)
        self.samples = 0

    @torch.no_grad()
    def feed(self, block: torch.Tensor) -> list[float]:
        """Add the next samples; returns the probabilities of the chunks completed by them."""
        self.samples += block.numel()
        x = torch.cat([self._rest, block.float().reshape(-1)])
        whole = x.numel() // self.chunk * self.chunk
        new = [float(self.model(c, SAMPLE_RATE)) for c in x[:whole].reshape(-1, self.chunk)]
        self._rest = x[whole:].clone()
        self.probs += new
        return new

    @torch.no_grad()
    def finish(self) -> list[Region]:
        """Speech regions (seconds) of everything fed (the last partial chunk zero-padded)."""
        from silero_vad import get_speech_timestamps_from_probs

        if self._rest.numel():
            rest = self._rest
            self.probs.append(
                float(self.model(torch.nn.functional.pad(rest, (0, self.chunk - rest.numel())), SAMPLE_RATE))
            )
            self._rest = torch.zeros(0)
        if not self.samples:
            return []
        stamps = get_speech_timestamps_from_probs(
            self.probs,
            sampling_rate=SAMPLE_RATE,
            threshold=self.threshold,
            min_speech_duration_ms=int(1000 * self.min_speech),
            min_silence_duration_ms=int(1000 * self.min_silence),
            speech_pad_ms=int(1000 * self.pad),
            audio_length_samples=self.samples,
        )
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


class EnergyVAD:
    """Frame energy in dB relative to the recording's loud frames, with hysteresis and minimum durations."""

    frame_s = 0.02

    def __init__(
        self,
        on_db: float = 25.0,
        off_db: float = 35.0,
        on_snr: float = 10.0,
        off_snr: float = 6.0,
        floor_db: float = -55.0,
        min_speech: float = MIN_SPEECH_S,
        min_silence: float = MIN_SILENCE_S,
        pad: float = PAD_S,
    ) -> None:
        if off_db < on_db or off_snr > on_snr:
            raise ValueError("the exit threshold must lie below the entry one: off_db >= on_db, off_snr <= on_snr")
        self.on_db, self.off_db, self.on_snr, self.off_snr, self.floor_db = on_db, off_db, on_snr, off_snr, floor_db
        self.min_speech, self.min_silence, self.pad = min_speech, min_silence, pad
        self.frame = int(self.frame_s * SAMPLE_RATE)
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far."""
        self.db: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)
        self.samples = 0

    def feed(self, block: torch.Tensor) -> None:
        """Add the next samples (frame dB values are kept, the samples are not)."""
        self.samples += block.numel()
        x = np.concatenate([self._rest, block.numpy().reshape(-1)])
        whole = x.size // self.frame * self.frame
        self.db.append(frame_db(x[:whole], self.frame))
        self._rest = x[whole:].copy()

    def finish(self) -> list[Region]:
        """Speech regions (seconds) of everything fed."""
        if self._rest.size:
            self.db.append(frame_db(self._rest, self._rest.size))
            self._rest = np.zeros(0, dtype=np.float32)
        db = np.concatenate(self.db) if self.db else np.zeros(0)
        if not db.size:
            return []
        noise, loud = (float(v) for v in np.percentile(db, [10, 99]))
        on = max(loud - self.on_db, noise + self.on_snr, self.floor_db)
        off = max(loud - self.off_db, noise + self.off_snr, self.floor_db)
        speech = hysteresis(db, on, off)
        frames_per_s = 1.0 / self.frame_s
        speech = fill_short_runs(speech, False, round(self.min_silence * frames_per_s))
        speech = fill_short_runs(speech, True, round(self.min_speech * frames_per_s), edges=True)
        return pad_regions(runs(speech, self.frame_s), self.pad, self.samples / SAMPLE_RATE)


class NoVAD:
    """The whole recording as one speech region."""

    def __init__(self) -> None:
        self.samples = 0

    def feed(self, block: torch.Tensor) -> None:
        """Count the samples."""
        self.samples += block.numel()

    def finish(self) -> list[Region]:
        """``[(0, duration)]``."""
        return [(0.0, self.samples / SAMPLE_RATE)] if self.samples else []


def make_vad(name: str) -> tuple[SileroVAD | EnergyVAD | NoVAD, str | None]:
    """The detector called ``name`` and a warning when ``silero`` had to fall back to ``energy``."""
    if name not in VAD_CHOICES:
        raise ValueError(f"--vad must be one of {', '.join(VAD_CHOICES)}, got {name!r}")
    if name == "silero":
        if silero_available():
            return SileroVAD(), None
        return EnergyVAD(), (
            "--vad silero: the silero-vad package is not installed (pip install silero-vad); "
            "using the energy detector instead"
        )
    return (EnergyVAD() if name == "energy" else NoVAD()), None


def frame_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS level in dBFS of consecutive ``frame``-sample frames of ``x`` (whose length is a multiple)."""
    if not x.size:
        return np.zeros(0, dtype=np.float32)
    power = np.mean(np.square(x.reshape(-1, frame), dtype=np.float64), axis=1)
    return (10.0 * np.log10(power + 1e-12)).astype(np.float32)


def hysteresis(level: np.ndarray, on: float, off: float) -> np.ndarray:
    """Runs of ``level > off`` that reach ``level > on`` somewhere (hysteresis thresholding)."""
    above, n = ndimage.label(level > off)
    if not n:
        return np.zeros(level.shape, dtype=bool)
    keep = np.asarray(ndimage.maximum((level > on).astype(np.int8), above, index=np.arange(1, n + 1))) > 0
    return np.concatenate([[False], keep])[above]


def fill_short_runs(mask: np.ndarray, value: bool, shorter_than: int, edges: bool = False) -> np.ndarray:
    """Flip runs of ``value`` shorter than ``shorter_than`` frames (runs touching an edge only with ``edges``)."""
    lab, n = ndimage.label(mask == value)
    if not n or shorter_than <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    flip = sizes < shorter_than
    flip[0] = False
    if not edges:
        flip[lab[0]] = flip[lab[-1]] = False
    out = mask.copy()
    out[flip[lab]] = not value
    return out


def runs(mask: np.ndarray, step: float) -> list[Region]:
    """(start, end) seconds of the True runs of a frame mask with frames of ``step`` seconds."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(float(a * step), float(b * step)) for a, b in zip(starts, ends)]


def pad_regions(regions: list[Region], pad: float, duration: float) -> list[Region]:
    """Regions widened by ``pad`` each side (within ``[0, duration]``), overlapping ones merged."""
    out: list[list[float]] = []
    for a, b in regions:
        a, b = max(0.0, a - pad), min(duration, b + pad)
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def speech_fraction(probs: list[float] | np.ndarray, threshold: float) -> float:
    """Fraction of frame values above ``threshold`` (0 for none): how much of a window is speech."""
    arr = np.asarray(probs, dtype=float)
    return float((arr > threshold).mean()) if arr.size else 0.0
