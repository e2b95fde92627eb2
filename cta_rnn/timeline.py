"""``cta-rnn timeline``: emotion over time in long recordings, conversations and a live stream.

    cta-rnn timeline --model M long.wav [--rttm diar.rttm] [--vad silero|energy|none] [--window S] [--hop S]
        [--smooth N] [--adapt] [--csv out.csv] [--json out.json] [--plot timeline.png]
    arecord -f S16_LE -r 16000 - | cta-rnn timeline --model M --live -

A recording is read twice in blocks, never whole: a first pass finds the speech (voice activity detection), a
second cuts each speech region into analysis windows (``--window``, default the model's training crop length;
``--hop``, default half of it), encodes them (in batches of 8 on GPU, one by one on CPU, where batching gains
nothing) and runs the model on each. Window posteriors are
median-smoothed over ``--smooth N`` consecutive windows (default 3: one odd window never shows on its own; 1 =
off), averaged per hop cell (weighted by how much of the cell each window covers), and consecutive cells with
the same label are merged into one segment; segments never span a pause or a speaker change. Output: one
line per segment on stdout (``start end speaker label confidence``), ``--csv``, ``--json`` ({file, model,
labels, settings, speech, segments, warnings}) and ``--plot`` (PNG: waveform, speech regions, a label band per
speaker, class probabilities over time).

``--rttm`` (a diarisation) gives each segment a speaker: windows are cut within one speaker's turns (overlapped
speech goes to the longer turn, see :mod:`cta_rnn.rttm`), speech is where the turns and the detector agree
(``--vad none``: the turns alone). With ``--adapt`` a speaker-normalised model normalises every speaker with
their own statistics, from non-overlapping windows of all of their speech (an extra encoding pass, nothing kept);
little speech per speaker is warned about as in ``cta-rnn predict --adapt``. Without ``--rttm`` the whole
recording counts as one speaker.

``--live -`` reads 16-bit little-endian PCM from standard input: raw 16-kHz mono, or any rate and channel count
behind a WAV header (detected by ``RIFF``), and prints the label of the last window every hop with the time it
took to compute (latency); windows with too little speech are printed with label ``-``.

Exit status: 0; 1 when the audio or the model cannot be read; 2 for bad options, output paths or RTTM.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from scipy import ndimage
from tqdm import tqdm

from cta_rnn.audio import AudioError, resample, unreadable
from cta_rnn.normalization import running_stats
from cta_rnn.predict import (
    LONG_FACTOR,
    SILENCE_PEAK,
    InputError,
    _output_problem,
    adapt_warning,
    check_outputs,
    min_segment,
)
from cta_rnn.rttm import intersect, read_rttm, speaker_intervals, turns_for
from cta_rnn.vad import (
    SAMPLE_RATE,
    Region,
    SileroVAD,
    frame_db,
    make_vad,
    silero_available,
    speech_fraction,
)

if TYPE_CHECKING:
    from cta_rnn.inference import EmotionRecognizer


DEFAULT_CROP_S = 4.0
"""Window length for a model without ``max_train_seconds``."""
BLOCK_S = 20.0
"""Seconds of audio per block of the speech-detection pass."""
BATCH_SIZE = {"cpu": 1, "gpu": 8}
"""Windows encoded at once. On CPU a batch is no faster than one window at a time (measured with Whisper tiny.en:
RTF 0.40 with 8, 0.28-0.43 with 1) and holds the padded encoder's activations of every window (RSS 1.5 GB
instead of 1.1 GB on a 4-min file): 1."""
ENVELOPE_POINTS = 4000
"""Min/max pairs kept for the plotted waveform, whatever the recording's length."""
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}{postfix}]"
LIVE_MIN_SPEECH = 0.25
"""Live windows with less speech than this fraction are not classified (label ``-``)."""
LIVE_ENERGY_DB = -45.0
"""Live ``--vad energy``: 20-ms frames above this level (dBFS) count as speech."""


# --- reading ---------------------------------------------------------------------------------------------------


class BlockReader:
    """A file's audio as mono float32 at ``sample_rate``, read piece by piece (random access, never whole).

    Resampling is exact at piece edges: each piece is resampled with enough real context either side, cut at
    input positions where input and output samples coincide, so pieces equal the whole file resampled at once.
    ``peak_samples`` is the largest number of samples (all channels) one read has held.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        try:
            self._file = sf.SoundFile(str(path))
        except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
            raise unreadable(path, err) from None
        self.in_rate, self.channels, self.in_frames = self._file.samplerate, self._file.channels, self._file.frames
        if self.in_frames <= 0:
            raise AudioError(path, "empty audio (0 samples)")
        self.sample_rate = sample_rate
        g = math.gcd(self.in_rate, sample_rate)
        self._in_step, self._out_step = self.in_rate // g, sample_rate // g
        width = math.ceil(6 * self._in_step / (0.99 * min(self._in_step, self._out_step)))  # torchaudio's kernel
        # (the polyphase filter of odd rates reaches 10 * max(in, out) / out input samples: within two steps)
        self._context = self._in_step * (math.ceil(width / self._in_step) + 2)
        self.frames = math.ceil(self.in_frames * self._out_step / self._in_step)
        self.peak_samples = 0

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.in_frames / self.in_rate

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_in(self, lo: int, hi: int) -> torch.Tensor:
        """Input samples [lo, hi) downmixed to mono (AudioError for non-finite samples)."""
        self._file.seek(lo)
        data = self._file.read(hi - lo, dtype="float32", always_2d=True)
        self.peak_samples = max(self.peak_samples, data.size)
        if not np.isfinite(data).all():
            raise AudioError(self.path, f"non-finite samples (NaN or Inf) near {lo / self.in_rate:.2f} s")
        return torch.from_numpy(data.mean(axis=1))

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Output samples [start, stop) (clipped to the file)."""
        start, stop = max(0, start), min(self.frames, stop)
        if stop <= start:
            return torch.zeros(0)
        if self.in_rate == self.sample_rate:
            return self._read_in(start, stop)
        k0, k1 = start // self._out_step, -(-stop // self._out_step)
        in0 = k0 * self._in_step
        lo = max(0, in0 - self._context)
        hi = min(self.in_frames, k1 * self._in_step + self._context)
        out = resample(self._read_in(lo, hi), self.in_rate, self.sample_rate)
        offset = (in0 - lo) // self._in_step * self._out_step + start - k0 * self._out_step
        return out[offset : offset + stop - start].contiguous()

    def blocks(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive blocks of ``size`` output samples (the last one shorter)."""
        for start in range(0, self.frames, size):
            yield self.read(start, start + size)


class Envelope:
    """Min and max of the waveform per bucket (at most ``points`` buckets): what the plot draws."""

    def __init__(self, total: int, sample_rate: int, points: int = ENVELOPE_POINTS) -> None:
        self.bucket = max(1, -(-total // points))
        n = -(-total // self.bucket)
        self.lo, self.hi = np.full(n, np.inf, np.float32), np.full(n, -np.inf, np.float32)
        self.sample_rate, self.pos = sample_rate, 0

    def feed(self, x: np.ndarray) -> None:
        """Add the next samples."""
        if not x.size:
            return
        first = (-self.pos) % self.bucket
        starts = np.concatenate([[0], np.arange(first or self.bucket, x.size, self.bucket)]).astype(np.int64)
        ids = (self.pos + starts) // self.bucket
        ok = ids < self.lo.size
        starts, ids = starts[ok], ids[ok]
        self.lo[ids] = np.minimum(self.lo[ids], np.minimum.reduceat(x, starts))
        self.hi[ids] = np.maximum(self.hi[ids], np.maximum.reduceat(x, starts))
        self.pos += x.size

    @property
    def times(self) -> np.ndarray:
        """Centre of each bucket in seconds."""
        return (np.arange(self.lo.size) + 0.5) * self.bucket / self.sample_rate

    @property
    def peak(self) -> float:
        """Largest absolute sample value seen."""
        seen = np.isfinite(self.lo)
        return float(max(np.abs(self.lo[seen]).max(initial=0.0), np.abs(self.hi[seen]).max(initial=0.0)))


# --- windows and their combination -------------------------------------------------------------------------------


@dataclass
class Piece:
    """A stretch of one speaker's speech: the unit windows are cut in and segments never cross."""

    start: float
    end: float
    speaker: str = ""
    windows: list[tuple[float, float]] = field(default_factory=list)


def default_window(crop: float | None) -> tuple[float, float]:
    """(window, hop): the training crop length (or 4 s) and half of it."""
    window = float(crop) if crop else DEFAULT_CROP_S
    return window, window / 2


def check_window(window: float, hop: float, smooth: int, crop: float | None) -> list[str]:
    """InputError for unusable ``--window``/``--hop``/``--smooth``; warnings for windows the model never saw."""
    low = min_segment(crop)
    trained = f"the model was trained on {crop:g}-s crops; " if crop else ""
    if not window >= low:
        raise InputError(f"--window {window:g} s is too short: {trained}use at least {low:g} s")
    if not 0 < hop <= window:
        raise InputError(f"--hop must be > 0 and at most --window ({window:g} s), got {hop:g}")
    if smooth < 1 or smooth % 2 == 0:
        raise InputError(f"--smooth must be an odd number of hops >= 1 (1 = no smoothing), got {smooth}")
    if crop and window > LONG_FACTOR * crop:
        return [
            f"--window {window:g} s is much longer than the {crop:g}-s training crops: labels of windows this long "
            f"are unreliable (the model never saw such lengths); use --window {crop:g}"
        ]
    return []


def window_bounds(start: float, end: float, window: float, hop: float) -> list[tuple[float, float]]:
    """Windows covering [start, end): every ``hop`` from ``start``, the last one ending at ``end``; a stretch
    shorter than ``window`` is one window."""
    if end - start <= window:
        return [(start, end)]
    n = math.ceil((end - start - window) / hop - 1e-9)
    starts = [start + k * hop for k in range(n)] + [end - window]
    return [(a, a + window) for a in starts]


def tile_bounds(start: float, end: float, window: float) -> list[tuple[float, float]]:
    """Non-overlapping windows tiling [start, end), each 0.5 to 1.5 ``window`` long (for speaker statistics:
    every frame counted once)."""
    n = max(1, round((end - start) / window))
    edges = [start + k * window for k in range(n)] + [end]
    return list(zip(edges, edges[1:]))


def combine(
    start: float, end: float, windows: Sequence[tuple[float, float]], values: np.ndarray, hop: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges (K + 1,) every ``hop`` over [start, end) and per-cell values (K, V): the windows' values
    averaged with weights = how much of the cell each window covers."""
    n = max(1, round((end - start) / hop))
    edges = np.append(start + hop * np.arange(n), end)
    win = np.asarray(windows, dtype=float)
    overlap = np.minimum(edges[1:, None], win[None, :, 1]) - np.maximum(edges[:-1, None], win[None, :, 0])
    weight = np.clip(overlap, 0, None)
    return edges, weight @ values / weight.sum(1, keepdims=True)


def smooth_windows(values: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """Median over ``n`` consecutive windows (one hop apart) of every column, class probabilities renormalised
    to sum 1: with ``n`` >= 3 one odd window never shows on its own, while a lasting change keeps its place."""
    if n <= 1 or len(values) < 2:
        return values
    out = ndimage.median_filter(values, size=(n, 1), mode="nearest")
    probs = out[:, :n_classes]
    out[:, :n_classes] = probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
    return out


def merge_cells(
    edges: np.ndarray, values: np.ndarray, labels: Sequence[str], columns: Sequence[str], speaker: str = ""
) -> list[dict[str, Any]]:
    """Consecutive cells with the same arg-max label as one segment (values averaged by cell duration); a model
    without classes (task dimensional) gives one segment per cell, its label empty."""
    best = values[:, : len(labels)].argmax(1) if labels else np.arange(len(values))
    change = np.flatnonzero(np.diff(best)) + 1
    rows = []
    for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [len(best)]])):
        dur = np.diff(edges[a : b + 1])
        mean = dur @ values[a:b] / dur.sum()
        k = int(best[a])
        row = {"start": round(float(edges[a]), 3), "end": round(float(edges[b]), 3), "speaker": speaker}
        row["label"] = labels[k] if labels else ""
        row.update({c: round(float(v), 6) for c, v in zip(columns, mean)})
        if labels:
            row["confidence"] = round(float(mean[k]), 6)
        rows.append(row)
    return rows


# --- the analysis ------------------------------------------------------------------------------------------------


@dataclass
class TimelineResult:
    """What :func:`analyse` finds: segments, per-cell values, speech regions, waveform envelope, warnings."""

    file: str
    duration: float
    labels: list[str]
    segments: pd.DataFrame
    cells: pd.DataFrame
    speech: list[Region]
    envelope: Envelope
    warnings: list[str]
    settings: dict[str, Any]
    peak_samples: int = 0

    def to_json(self, model: str) -> dict[str, Any]:
        """The ``--json`` document: {file, model, labels, settings, duration, speech, segments, warnings}."""
        return {
            "file": self.file,
            "model": model,
            "labels": self.labels,
            **self.settings,
            "duration": round(self.duration, 3),
            "speech": [[round(a, 3), round(b, 3)] for a, b in self.speech],
            "segments": self.segments.to_dict(orient="records"),
            "warnings": self.warnings,
        }


def scan(reader: BlockReader, vad: Any, bar: tqdm | None = None) -> tuple[list[Region], Envelope]:
    """First pass, block by block: speech regions (seconds) and the waveform envelope."""
    env = Envelope(reader.frames, reader.sample_rate)
    start = time.perf_counter()
    done = 0
    for block in reader.blocks(int(BLOCK_S * reader.sample_rate)):
        env.feed(block.numpy())
        vad.feed(block)
        done += block.numel()
        _advance(bar, start, done / reader.sample_rate)
    return vad.finish(), env


def _advance(bar: tqdm | None, start: float, done: float) -> None:
    """Move a progress bar to ``done`` seconds of audio, showing the real-time factor so far.

    The position is clamped to the total: summed float seconds (and the resampled length's rounding) may pass
    it by a hair, which tqdm would warn about.
    """
    if bar is not None:
        bar.set_postfix(rtf=f"{(time.perf_counter() - start) / max(done, 1e-9):.3f}", refresh=False)
        bar.update(min(done, bar.total if bar.total is not None else done) - bar.n)


def speech_pieces(
    regions: list[Region], intervals: list[tuple[float, float, str]] | None, min_len: float
) -> tuple[list[Piece], list[Region]]:
    """Pieces to analyse (speech, cut at speaker changes) and the ones too short for the model."""
    spans = intersect(regions, intervals) if intervals is not None else [(a, b, "") for a, b in regions]
    pieces = [Piece(a, b, s) for a, b, s in spans if b - a >= min_len]
    return pieces, [(a, b) for a, b, _ in spans if b - a < min_len]


def _batches(
    rec: EmotionRecognizer, reader: BlockReader, jobs: Iterator[tuple[Any, float, float]], batch_size: int
) -> Iterator[tuple[list[Any], torch.Tensor, torch.Tensor]]:
    """Encode ``(key, start s, end s)`` windows in batches (padded, relative lengths): (keys, hidden, frames)."""
    sr = reader.sample_rate
    keys: list[Any] = []
    wavs: list[torch.Tensor] = []

    def flush() -> tuple[list[Any], torch.Tensor, torch.Tensor]:
        longest = max(w.numel() for w in wavs)
        batch = torch.zeros(len(wavs), longest)
        for i, w in enumerate(wavs):
            batch[i, : w.numel()] = w
        lengths = torch.tensor([w.numel() / longest for w in wavs])
        hidden, frames = rec.features(batch, lengths)
        return list(keys), hidden, frames

    for key, a, b in jobs:
        keys.append(key)
        wavs.append(reader.read(round(a * sr), round(b * sr)))
        if len(wavs) == batch_size:
            yield flush()
            keys.clear()
            wavs.clear()
    if wavs:
        yield flush()


def speaker_statistics(
    rec: EmotionRecognizer,
    reader: BlockReader,
    pieces: Sequence[Piece],
    window: float,
    batch_size: int,
    bar: tqdm | None = None,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """Per speaker: (mean, std) of the encoder features of all their speech (non-overlapping windows, running
    sums: nothing kept), and ``cta-rnn predict --adapt``'s warning where there is too little of it."""
    stats, warnings = {}, []
    start, done = time.perf_counter(), 0.0
    for spk in sorted({p.speaker for p in pieces}):
        spans = [w for p in pieces if p.speaker == spk for w in tile_bounds(p.start, p.end, window)]

        def feats(spans: list[tuple[float, float]] = spans) -> Iterator[torch.Tensor]:
            nonlocal done
            for keys, hidden, frames in _batches(rec, reader, ((w, *w) for w in spans), batch_size):
                for i, (a, b) in enumerate(keys):
                    done += b - a
                    _advance(bar, start, done)
                    yield hidden[i, :, : int(frames[i])].transpose(0, 1).cpu()

        stats[spk] = running_stats(feats())
        who = f"--adapt, speaker {spk}" if spk else "--adapt"
        seconds = sum(b - a for a, b in spans)
        msg = adapt_warning(len(spans), seconds, len(rec.labels), who, "leave out --adapt")
        if msg:
            warnings.append(msg)
    return stats, warnings


def classify_pieces(
    rec: EmotionRecognizer,
    reader: BlockReader,
    pieces: list[Piece],
    hop: float,
    smooth: int,
    batch_size: int,
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    bar: tqdm | None = None,
) -> Iterator[tuple[Piece, np.ndarray, np.ndarray, list[str]]]:
    """Second pass: every piece's (piece, cell edges, cell values, value columns), in time order, as soon as its
    windows are done. Values: ``prob_<label>`` per class, then any ``dimensions`` the model outputs."""
    labels = list(rec.labels)
    pending: dict[int, list[np.ndarray | None]] = {}
    columns: list[str] = [f"prob_{lab}" for lab in labels]
    nxt, start, done = 0, time.perf_counter(), 0.0
    jobs = ((i, j, a, b) for i, p in enumerate(pieces) for j, (a, b) in enumerate(p.windows))
    for keys, hidden, frames in _batches(rec, reader, (((i, j), a, b) for i, j, a, b in jobs), batch_size):
        for spk in dict.fromkeys(pieces[i].speaker for i, _ in keys):
            idx = [n for n, (i, _) in enumerate(keys) if pieces[i].speaker == spk]
            out = rec.predict_features(hidden[idx], frames[idx], (stats or {}).get(spk))
            values = [out["probs"].numpy()]
            dims = out.get("dimensions") or {}  # hook: dimensional outputs (arousal, valence...) ride along
            values += [torch.as_tensor(v).reshape(-1, 1).float().numpy() for v in dims.values()]
            columns = [f"prob_{lab}" for lab in labels] + list(dims)
            for row, n in zip(np.concatenate(values, 1), idx):
                i, j = keys[n]
                pending.setdefault(i, [None] * len(pieces[i].windows))[j] = row
        while nxt < len(pieces) and nxt in pending and all(v is not None for v in pending[nxt]):
            p = pieces[nxt]
            smoothed = smooth_windows(np.stack(pending.pop(nxt)), smooth, len(labels))
            edges, cell_values = combine(p.start, p.end, p.windows, smoothed, hop)
            done += p.end - p.start
            _advance(bar, start, done)
            yield p, edges, cell_values, columns
            nxt += 1


def analyse(
    rec: EmotionRecognizer,
    path: str | os.PathLike,
    *,
    vad: str = "silero",
    window: float | None = None,
    hop: float | None = None,
    smooth: int = 3,
    rttm: str | os.PathLike | None = None,
    file_id: str | None = None,
    adapt: bool = False,
    batch_size: int | None = None,
    progress: bool = False,
    on_segment: Callable[[dict[str, Any]], None] | None = None,
) -> TimelineResult:
    """Emotion over time in one recording (any rate, channels and format soundfile reads), read in blocks.

    ``batch_size``: windows encoded at once (default :data:`BATCH_SIZE`: 1 on CPU, 8 on GPU). ``on_segment`` is
    called with each segment's row as soon as its speech piece is done. Raises AudioError
    (unreadable audio), RTTMError (bad ``rttm``) and InputError (bad window/hop/smooth).
    """
    path = Path(path)
    crop = getattr(rec, "crop", None)
    window = float(window or default_window(crop)[0])
    hop = float(hop or window / 2)
    warnings = check_window(window, hop, smooth, crop)
    if batch_size is None:
        batch_size = BATCH_SIZE["gpu" if str(getattr(rec, "device", "cpu")).startswith("cuda") else "cpu"]
    intervals = None
    if rttm is not None:
        intervals = speaker_intervals(turns_for(read_rttm(rttm), file_id or path.stem, rttm))
    detector, fallback = make_vad(vad)
    if fallback:
        warnings.append(fallback)
        vad = "energy"
    sr = int(rec.encoder.sample_rate)
    bar_kw = {"file": sys.stderr, "disable": not progress, "leave": True, "bar_format": BAR_FORMAT}
    with BlockReader(path, SAMPLE_RATE) as vad_reader:
        duration = vad_reader.duration
        with tqdm(total=vad_reader.frames / vad_reader.sample_rate, desc="speech", **bar_kw) as bar:
            regions, env = scan(vad_reader, detector, bar)
        vad_peak = vad_reader.peak_samples
    if env.peak < SILENCE_PEAK:
        warnings.append(f"{path}: silent (peak amplitude {env.peak:.1e}): there is no speech to label")
    elif not regions:
        warnings.append(f"{path}: no speech found by the {vad} detector")
    low = min_segment(crop)
    pieces, short = speech_pieces(regions, intervals, low)
    if short:
        warnings.append(
            f"{path}: {len(short)} speech stretch(es) shorter than {low:g} s ({sum(b - a for a, b in short):.1f} s "
            "in all) left unlabelled: too short for the model"
        )
    for p in pieces:
        p.windows = window_bounds(p.start, p.end, window, hop)
    stats = None
    speaker_model = getattr(getattr(rec.model, "normalizer", None), "mode", None) == "speaker"
    if adapt and not speaker_model:
        warnings.append("--adapt has no effect: the model was not trained with per-speaker statistics")
    labels = list(rec.labels)
    rows: list[dict[str, Any]] = []
    cells: list[pd.DataFrame] = []
    with BlockReader(path, sr) as reader:
        if adapt and speaker_model and pieces:
            total = sum(p.end - p.start for p in pieces)
            with tqdm(total=total, desc="speaker statistics", **bar_kw) as bar:
                stats, adapt_msgs = speaker_statistics(rec, reader, pieces, window, batch_size, bar)
            warnings += adapt_msgs
        total = sum(p.end - p.start for p in pieces)
        with tqdm(total=total, desc="emotion", **bar_kw) as bar:
            for p, edges, values, columns in classify_pieces(rec, reader, pieces, hop, smooth, batch_size, stats, bar):
                new = merge_cells(edges, values, labels, columns, p.speaker)
                for row in new if on_segment is not None else []:
                    on_segment(row)
                rows += new
                frame = pd.DataFrame(values, columns=columns)
                frame.insert(0, "speaker", p.speaker)
                frame.insert(0, "end", edges[1:])
                frame.insert(0, "start", edges[:-1])
                cells.append(frame)
        peak = max(vad_peak, reader.peak_samples)
    probs = [f"prob_{lab}" for lab in labels]
    base = ["start", "end", "speaker", "label", *probs, "confidence"]
    segments = pd.DataFrame(rows)
    segments = segments.reindex(columns=base + [c for c in segments.columns if c not in base])
    settings = {"vad": vad, "window": window, "hop": hop, "smooth": smooth, "rttm": str(rttm) if rttm else None}
    return TimelineResult(
        file=str(path),
        duration=duration,
        labels=labels,
        segments=segments,
        cells=pd.concat(cells, ignore_index=True)
        if cells
        else pd.DataFrame(columns=["start", "end", "speaker", *probs]),
        speech=regions,
        envelope=env,
        warnings=warnings,
        settings=settings,
        peak_samples=peak,
    )


SEGMENT_FIELDS = ("start", "end", "speaker", "label", "confidence")


def segment_line(row: dict[str, Any]) -> str:
    """``start<TAB>end<TAB>speaker<TAB>label<TAB>confidence``, then ``<TAB>arousal=3.12 ...`` for a model with
    dimensions; ``-`` for an unknown speaker, and for the label and confidence of a model without classes."""
    confidence = f"{row['confidence']:.3f}" if "confidence" in row else "-"
    fields = [f"{row['start']:.2f}", f"{row['end']:.2f}", row["speaker"] or "-", row["label"] or "-", confidence]
    dims = " ".join(f"{k}={v:.2f}" for k, v in row.items() if k not in SEGMENT_FIELDS and not k.startswith("prob_"))
    return "\t".join(fields + ([dims] if dims else []))


def plot_result(result: TimelineResult, path: str | os.PathLike) -> Path:
    """``--plot``: the timeline figure of :func:`cta_rnn.plots.timeline_figure`, saved as PNG."""
    from cta_rnn.plots import plot_timeline

    env = result.envelope
    seen = np.isfinite(env.lo)
    cells = result.cells
    return plot_timeline(
        (env.times[seen], env.lo[seen], env.hi[seen]),
        result.speech,
        result.segments.to_dict(orient="records"),
        result.labels,
        cells[["start", "end"]].to_numpy(float),
        cells[[f"prob_{lab}" for lab in result.labels]].to_numpy(float),
        path,
        title=f"{Path(result.file).name}: emotion over time",
    )


# --- live --------------------------------------------------------------------------------------------------------


def read_exact(stream: IO[bytes], n: int) -> bytes:
    """``n`` bytes from a stream (fewer only at its end)."""
    parts, got = [], 0
    while got < n:
        data = stream.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def stream_format(stream: IO[bytes], name: str = "stdin") -> tuple[int, int, bytes]:
    """(sample rate, channels, bytes already read that are samples): raw 16-kHz mono S16_LE, or what a WAV
    header says (16-bit PCM only; InputError otherwise)."""
    head = read_exact(stream, 4)
    if head != b"RIFF":
        return SAMPLE_RATE, 1, head
    riff = read_exact(stream, 8)
    if riff[4:8] != b"WAVE":
        raise InputError(f"{name}: starts with RIFF but is not a WAV stream")
    rate = channels = bits = None
    while True:
        chunk = read_exact(stream, 8)
        if len(chunk) < 8:
            raise InputError(f"{name}: WAV header ends before its data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            break
        body = read_exact(stream, size + (size & 1))
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt not in (1, 0xFFFE) or bits != 16:
                raise InputError(f"{name}: WAV stream of {bits}-bit samples (format {fmt}): only 16-bit PCM is read")
    if rate is None or channels is None or not channels:
        raise InputError(f"{name}: WAV header without a valid fmt chunk")
    return int(rate), int(channels), b""


def iter_live(
    rec: EmotionRecognizer,
    stream: IO[bytes],
    window: float,
    hop: float,
    vad: str = "silero",
    name: str = "stdin",
) -> Iterator[dict[str, Any]]:
    """One result per hop once a window is buffered: {start, end, label, confidence, probs, latency, speech}.

    ``latency``: seconds spent on that window (resampling, speech check, encoder and model); the stream keeps up
    when it stays below ``hop``. Only the last window of samples is held.
    """
    if vad == "silero" and not silero_available():
        vad = "energy"  # as analyse does (the command line says so on stderr)
    rate, channels, prefix = stream_format(stream, name)
    sr = int(rec.encoder.sample_rate)
    hop_frames, win_frames = round(hop * rate), round(window * rate)
    frame_bytes = 2 * channels
    buf = np.zeros((0, channels), dtype=np.float32)
    detector = SileroVAD() if vad == "silero" else None
    vad_probs: deque[float] = deque(maxlen=max(1, round(window * SAMPLE_RATE) // SileroVAD.chunk))
    carry, pos = prefix, 0
    while True:
        data = carry + read_exact(stream, hop_frames * frame_bytes - len(carry))
        whole = len(data) // frame_bytes * frame_bytes
        if whole < hop_frames * frame_bytes:
            return  # end of stream: a partial hop is dropped
        samples = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, channels).astype(np.float32) / 32768.0
        carry, pos = data[whole:], pos + len(samples)
        buf = np.concatenate([buf, samples])[-win_frames:]
        tick = time.perf_counter()
        if detector is not None:  # stateful: fed every hop, even before a window is full
            vad_probs.extend(detector.feed(resample(torch.from_numpy(samples.mean(1)), rate, SAMPLE_RATE)))
        if len(buf) < win_frames:
            continue
        wav = resample(torch.from_numpy(buf.mean(1)), rate, sr)
        if vad == "silero":
            speech = speech_fraction(list(vad_probs), detector.threshold)
        elif vad == "energy":
            frame = int(0.02 * sr)
            x = wav.numpy()[: wav.numel() // frame * frame]
            speech = speech_fraction(frame_db(x, frame), LIVE_ENERGY_DB)
        else:
            speech = 1.0
        row: dict[str, Any] = {"start": (pos - win_frames) / rate, "end": pos / rate, "speech": speech}
        if speech >= LIVE_MIN_SPEECH:
            out = rec.predict_batch(wav[None], torch.ones(1))
            probs = out["probs"][0]
            confidence = float(probs.max()) if probs.numel() else 0.0
            row.update(label=out["labels"][0], confidence=confidence, probs=probs.tolist())
            row.update({name: float(v[0]) for name, v in out.get("dimensions", {}).items()})
        else:
            row.update(label="-", confidence=0.0, probs=None)
        row["latency"] = time.perf_counter() - tick
        yield row


def live_line(row: dict[str, Any]) -> str:
    """``start<TAB>end<TAB>label<TAB>confidence<TAB>latency=<s>s``."""
    return (
        f"{row['start']:.2f}\t{row['end']:.2f}\t{row['label']}\t{row['confidence']:.3f}\tlatency={row['latency']:.3f}s"
    )


def run_live(rec: EmotionRecognizer, stream: IO[bytes], window: float, hop: float, vad: str) -> int:
    """Print a line per hop; warn (at most every 10 s of stream) when a window took longer than the hop."""
    warned_at = -math.inf
    slow = 0
    for row in iter_live(rec, stream, window, hop, vad):
        print(live_line(row), flush=True)
        if row["latency"] > hop:
            slow += 1
            if row["end"] - warned_at >= 10.0:
                warned_at = row["end"]
                print(
                    f"WARNING: live: window ending at {row['end']:.2f} s took {row['latency']:.2f} s, more than the "
                    f"{hop:g}-s hop: falling behind real time ({slow} slow window(s) so far); try a longer --hop",
                    file=sys.stderr,
                    flush=True,
                )
    return 0


# --- command line ------------------------------------------------------------------------------------------------


def check_timeline_outputs(csv: Path | None, json: Path | None, plot: Path | None, inputs: Sequence[str]) -> None:
    """``--csv``/``--json``/``--plot`` are files that may not be an input (audio or RTTM) nor each other."""
    check_outputs(csv, json, None, inputs, [])
    if plot is None:
        return
    given = {os.path.abspath(p) for p in inputs}
    for flag, other in (("--csv", csv), ("--json", json)):
        if other is not None and os.path.abspath(other) == os.path.abspath(plot):
            raise InputError(f"--plot and {flag} are the same file ({plot})")
    problem = _output_problem(plot, False, given)
    if problem:
        raise InputError(f"--plot {plot}: {problem}")
