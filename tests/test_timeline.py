"""Issue 19, ``cta-rnn timeline``: emotion over time in long recordings, conversations (RTTM) and a live stream.

A toy fold (speaker-normalised, 2-s training crops) runs on a stand-in encoder that turns pitch into the toy
store's class pattern: a 200-Hz tone reads as ``neu``, a 1-kHz tone as ``ang``, silence as noise. Long files
made of such tones have known segments.
"""

from __future__ import annotations

import io
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from toy_data import train_toy_fold

from cta_rnn.audio import load_audio
from cta_rnn.commands import main_timeline
from cta_rnn.normalization import running_stats
from cta_rnn.plots import timeline_figure
from cta_rnn.rttm import RTTMError, intersect, read_rttm, speaker_intervals, turns_for
from cta_rnn.timeline import (
    BlockReader,
    Envelope,
    analyse,
    combine,
    iter_live,
    merge_cells,
    plot_result,
    smooth_windows,
    tile_bounds,
    window_bounds,
)
from cta_rnn.vad import EnergyVAD, NoVAD, hysteresis, silero_available

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
LABELS = ["neu", "hap", "ang", "sad"]


NOISE = torch.randn(1, 3, 3000, 16, generator=torch.Generator().manual_seed(0))


class ToneEncoder:
    """3 layers x 16 dims at 50 frames/s. A voiced frame (RMS > 0.01) gets the toy class pattern on layer 1 of
    ``neu`` (pitch under 500 Hz, from zero crossings) or ``ang`` (above); padded frames are zeros."""

    layers, dim, sample_rate, frame_rate = [0, 1, 2], 16, SR, 50.0

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        b, n = wavs.shape
        t = max(1, n // 320)
        frames = (lengths * n / 320).floor().long().clamp(1, t)
        x = torch.nn.functional.pad(wavs, (0, t * 320 - n))[:, : t * 320].reshape(b, t, 320)
        crossings = (torch.sign(x[..., 1:]) != torch.sign(x[..., :-1])).sum(-1).float()
        pitch = crossings * 50 / 2
        voiced = x.pow(2).mean(-1).sqrt() > 0.01
        cls = torch.where(pitch > 500, 2, 0)
        hidden = NOISE[:, :, :t].repeat(b, 1, 1, 1)  # the same noise at the same frame, alone or in a batch
        proto = torch.zeros(b, t, 16)
        for k in (0, 2):
            proto[..., k * 4 : (k + 1) * 4] += 3.0 * ((cls == k) & voiced)[..., None].float()
        hidden[:, 1] += proto
        valid = torch.arange(t)[None] < frames[:, None]
        return hidden * valid[:, None, :, None], frames


@pytest.fixture(scope="module")
def fold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    args = ("--number_of_epochs=8", "--batch_size=8", "--lr=0.01", "--normalization=speaker")
    return train_toy_fold(tmp_path_factory.mktemp("toy"), *args, n_per_speaker=16, speakers=4)


@pytest.fixture()
def encoder(monkeypatch: pytest.MonkeyPatch) -> ToneEncoder:
    import cta_rnn.encoders

    enc = ToneEncoder()
    monkeypatch.setattr(cta_rnn.encoders, "build_encoder", lambda spec, device=None: enc)
    return enc


@pytest.fixture()
def rec(fold: Path, encoder: ToneEncoder):
    from cta_rnn.inference import EmotionRecognizer

    return EmotionRecognizer.from_dir(fold, encoder=encoder)


def tones(parts: list[tuple[str, float]], sr: int = SR, seed: int = 0, noise: float = 1e-3) -> np.ndarray:
    """Concatenated pieces: ``neu`` (200-Hz tone), ``ang`` (1-kHz tone) or ``sil`` (noise), all over noise."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, seconds in parts:
        t = np.arange(int(seconds * sr)) / sr
        x = noise * rng.standard_normal(t.size)
        if kind != "sil":
            x += 0.3 * np.sin(2 * np.pi * (200 if kind == "neu" else 1000) * t)
        out.append(x)
    return np.concatenate(out).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, subtype=subtype)
    return path


# --- combination of window posteriors -----------------------------------------------------------------------------


def test_windows_cover_a_piece_every_hop_the_last_ending_at_its_end() -> None:
    assert window_bounds(0, 5, 2, 1) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert window_bounds(0, 5.5, 2, 1) == [(0, 2), (1, 3), (2, 4), (3, 5), (3.5, 5.5)]
    assert window_bounds(1.0, 2.5, 2, 1) == [(1.0, 2.5)]  # shorter than a window: itself
    assert tile_bounds(0, 5.2, 2) == [(0, 2), (2, 4), (4, 5.2)]
    assert tile_bounds(0, 0.7, 2) == [(0, 0.7)]


def test_overlapping_windows_are_averaged_per_hop_cell_and_merged() -> None:
    windows = window_bounds(0, 5, 2, 1)  # 4 windows, 5 cells of 1 s
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
    edges, cells = combine(0, 5, windows, probs, 1.0)
    assert edges.tolist() == [0, 1, 2, 3, 4, 5]
    expected = [[0.9, 0.1], [0.85, 0.15], [0.5, 0.5], [0.15, 0.85], [0.1, 0.9]]
    np.testing.assert_allclose(cells, expected)
    rows = merge_cells(edges, cells, ["a", "b"], ["prob_a", "prob_b"], speaker="S1")
    # cell 2 is a tie: arg-max takes the first class
    assert [(r["start"], r["end"], r["label"], r["speaker"]) for r in rows] == [(0, 3, "a", "S1"), (3, 5, "b", "S1")]
    assert rows[0]["prob_a"] == pytest.approx((0.9 + 0.85 + 0.5) / 3)
    assert rows[1]["confidence"] == pytest.approx(0.875)


def test_one_odd_window_never_shows_with_smoothing_and_a_lasting_change_keeps_its_place() -> None:
    windows = window_bounds(0, 8, 2, 1)  # 7 windows, 8 cells
    probs = np.tile([0.7, 0.3], (7, 1))
    probs[3] = [0.1, 0.9]  # one confident window (3-5 s) says b

    def segments(values: np.ndarray) -> list[tuple[float, float, str]]:
        edges, cells = combine(0, 8, windows, values, 1.0)
        return [(r["start"], r["end"], r["label"]) for r in merge_cells(edges, cells, ["a", "b"], ["pa", "pb"])]

    assert segments(probs) == [(0, 3, "a"), (3, 5, "b"), (5, 8, "a")]  # unsmoothed: it flips the cells it covers
    assert segments(smooth_windows(probs, 3, 2)) == [(0, 8, "a")]
    step = np.array([[0.8, 0.2]] * 3 + [[0.3, 0.7]] * 4)  # b from the window starting at 3 s on
    assert segments(step) == segments(smooth_windows(step, 3, 2)) == [(0, 4, "a"), (4, 8, "b")]
    np.testing.assert_allclose(smooth_windows(probs, 3, 2).sum(1), 1.0)


def test_cells_follow_the_hop_and_a_short_tail_joins_the_last_cell() -> None:
    edges, cells = combine(10.0, 13.4, [(10.0, 12.0), (11.0, 13.0), (11.4, 13.4)], np.eye(3), 1.0)
    assert edges.tolist() == [10.0, 11.0, 12.0, 13.4]
    np.testing.assert_allclose(cells.sum(1), 1.0)
    np.testing.assert_allclose(cells[0], [1, 0, 0])


# --- RTTM ----------------------------------------------------------------------------------------------------------


RTTM = """\
SPKR-INFO talk 1 <NA> <NA> <NA> unknown A <NA> <NA>
SPEAKER talk 1 0.00 6.00 <NA> <NA> A <NA> <NA>
;; a comment
SPEAKER talk 1 5.50 7.50 <NA> <NA> B <NA> <NA>

SPEAKER other 1 1.0 2.0 <NA> <NA> C <NA> <NA>
SPEAKER talk 1 14.00 1.00 <NA> <NA> A <NA> <NA>
"""


def test_rttm_is_parsed_exactly_and_other_line_types_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.rttm"
    path.write_text(RTTM)
    turns = read_rttm(path)
    assert len(turns) == 4 and turns.line.tolist() == [2, 4, 6, 7]
    mine = turns_for(turns, "talk", path)
    assert list(zip(mine.start, mine.end, mine.speaker)) == [(0.0, 6.0, "A"), (5.5, 13.0, "B"), (14.0, 15.0, "A")]


def test_a_tab_separated_rttm_keeps_speaker_names_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "d.rttm"
    path.write_text(
        "SPEAKER\ttalk\t1\t0.00\t6.00\t<NA>\t<NA>\tDr Smith\t<NA>\t<NA>\n"
        "SPEAKER talk 1 6.50 1.25 <NA> <NA> B <NA> <NA>\n"
    )
    turns = read_rttm(path)
    assert list(zip(turns.start, turns.end, turns.speaker)) == [(0.0, 6.0, "Dr Smith"), (6.5, 7.75, "B")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("SPEAKER talk 1 0.5 <NA>", "SPEAKER line with 5 fields, need 10"),
        ("SPEAKER talk 1 x 1.0 <NA> <NA> A <NA> <NA>", "onset 'x' is not a number"),
        ("SPEAKER talk 1 1.0 -2 <NA> <NA> A <NA> <NA>", "duration '-2' must be a finite number >= 0"),
        ("SPEAKER talk 1 nan 1 <NA> <NA> A <NA> <NA>", "onset 'nan' must be a finite number >= 0"),
    ],
)
def test_a_bad_rttm_line_is_named_by_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "d.rttm"
    path.write_text(f"SPEAKER talk 1 0 1 <NA> <NA> A <NA> <NA>\n\n{line}\n")
    with pytest.raises(RTTMError) as err:
        read_rttm(path)
    assert str(err.value).startswith(f"{path}:3: {problem}")


def test_an_rttm_without_the_file_lists_the_ids_it_has(tmp_path: Path) -> None:
    path = tmp_path / "d.rttm"
    path.write_text(RTTM)
    with pytest.raises(RTTMError, match=r"no SPEAKER lines for file id 'meeting' \(it has other, talk\)"):
        turns_for(read_rttm(path), "meeting", path)


def test_overlapped_speech_goes_to_the_longer_turn_and_speech_is_cut_at_turns() -> None:
    turns = pd.DataFrame(
        {"start": [0.0, 5.5, 7.0, 14.0], "end": [6.0, 13.0, 7.5, 15.0], "speaker": ["A", "B", "C", "A"]}
    )
    # A (6 s) and B (7.5 s) overlap on 5.5-6: B's; C's back-channel inside B's turn does not cut it
    assert speaker_intervals(turns) == [(0.0, 5.5, "A"), (5.5, 13.0, "B"), (14.0, 15.0, "A")]
    tie = pd.DataFrame({"start": [0.0, 2.0], "end": [4.0, 6.0], "speaker": ["A", "B"]})
    assert speaker_intervals(tie) == [(0.0, 4.0, "A"), (4.0, 6.0, "B")]  # equal turns: the earlier start
    speech = [(1.0, 3.0), (4.0, 14.5)]
    assert intersect(speech, speaker_intervals(turns)) == [
        (1.0, 3.0, "A"),
        (4.0, 5.5, "A"),
        (5.5, 13.0, "B"),
        (14.0, 14.5, "A"),
    ]


# --- speech detection ------------------------------------------------------------------------------------------------


def test_energy_vad_finds_known_speech_in_a_synthetic_file() -> None:
    x = torch.from_numpy(tones([("sil", 1.0), ("neu", 2.0), ("sil", 0.2), ("ang", 1.5), ("sil", 2.0), ("neu", 1.0)]))
    vad = EnergyVAD()
    for block in x.split(7001):  # block edges anywhere
        vad.feed(block)
    regions = vad.finish()
    # the 0.2-s pause is shorter than min_silence: one region; 0.1 s padding each side
    assert len(regions) == 2
    np.testing.assert_allclose(regions, [(0.9, 4.8), (6.6, 7.7)], atol=0.03)
    silent = EnergyVAD()
    silent.feed(torch.from_numpy(tones([("sil", 3.0)])))
    assert silent.finish() == []
    sparse = EnergyVAD()  # 2 % speech over -43 dB noise: the loud reference is speech, the noise stays noise
    sparse.feed(torch.from_numpy(tones([("sil", 40.0), ("ang", 1.0), ("sil", 9.0)], noise=0.007)))
    np.testing.assert_allclose(sparse.finish(), [(39.9, 41.1)], atol=0.03)
    none = NoVAD()
    none.feed(x)
    assert none.finish() == [(0.0, x.numel() / SR)]


def test_without_silero_the_energy_detector_is_used_with_a_warning(
    rec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("cta_rnn.vad.silero_available", lambda: False)
    path = write(tmp_path / "a.wav", tones([("sil", 1.0), ("ang", 3.0), ("sil", 1.0)]))
    result = analyse(rec, path, progress=True)  # default vad: silero
    assert result.warnings == [
        "--vad silero: the silero-vad package is not installed (pip install silero-vad); using the energy detector "
        "instead"
    ]
    assert result.settings["vad"] == "energy"
    assert [(r.start, r.end, r.label) for r in result.segments.itertuples()] == [(0.9, 4.1, "ang")]
    assert "rtf=" in capsys.readouterr().err  # the progress bar shows the real-time factor


def test_hysteresis_keeps_quiet_ends_of_loud_runs_only() -> None:
    level = np.array([0, 5, 9, 5, 0, 5, 5, 0, 9, 0], dtype=float)
    assert hysteresis(level, on=8, off=4).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 1, 0]


@pytest.mark.skipif(not silero_available(), reason="silero-vad not installed")
def test_silero_vad_finds_synthetic_speech_block_by_block(one_thread_torch: None) -> None:
    from cta_rnn.tts import TTSError, synthesize
    from cta_rnn.vad import SileroVAD

    try:
        a = synthesize("The quick brown fox jumps over the lazy dog.", sample_rate=SR)
        b = synthesize("Nobody expected the results to be so good.", sample_rate=SR, pitch=70)
    except TTSError as err:
        pytest.skip(f"espeak-ng unavailable: {err}")
    x = np.concatenate([np.zeros(SR), a, np.zeros(2 * SR), b, np.zeros(SR)]).astype(np.float32)
    threads = torch.get_num_threads()
    vad = SileroVAD()
    assert torch.get_num_threads() == threads  # silero_vad's import-time set_num_threads(1) is undone
    for block in torch.from_numpy(x).split(12345):
        vad.feed(block)
    regions = vad.finish()
    assert len(regions) == 2
    truth = [(1.0, 1.0 + a.size / SR), (3.0 + a.size / SR, 3.0 + (a.size + b.size) / SR)]
    np.testing.assert_allclose(regions, truth, atol=0.35)


# --- block reading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sr", "channels"), [(44100, 2), (22050, 1), (8000, 1), (16000, 2), (11127, 1)])
def test_blocks_equal_the_whole_file_resampled_at_once(tmp_path: Path, sr: int, channels: int) -> None:
    x = np.random.default_rng(0).normal(0, 0.1, (int(sr * 5.3), channels)).astype(np.float32)
    path = write(tmp_path / "a.flac", x, sr, subtype="PCM_24")
    whole = load_audio(path, SR)
    reader = BlockReader(path, SR)
    assert reader.frames == whole.numel()
    np.testing.assert_allclose(torch.cat(list(reader.blocks(20011))), whole, atol=1e-6)
    np.testing.assert_allclose(reader.read(12345, 54321), whole[12345:54321], atol=1e-6)


def test_progress_never_passes_the_total(tmp_path: Path) -> None:
    """Float seconds summed piece by piece (and a resampled length rounded up) end a hair past the total: the
    bar stops at the total instead of tqdm's 'clamping frac' warning."""
    from tqdm import tqdm

    from cta_rnn.timeline import _advance

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tqdm(total=1.0, file=io.StringIO(), mininterval=0) as bar:
            done = 0.0
            for _ in range(10):
                done += 0.1
                _advance(bar, 0.0, done + 1e-9)
    assert bar.n == 1.0


def test_envelope_keeps_min_and_max_per_bucket_whatever_the_blocks() -> None:
    x = np.random.default_rng(1).normal(size=10007).astype(np.float32)
    env = Envelope(x.size, SR, points=100)
    for part in np.array_split(x, 7):
        env.feed(part)
    pad = np.pad(x, (0, env.bucket * env.lo.size - x.size), constant_values=np.nan).reshape(env.lo.size, -1)
    np.testing.assert_array_equal(env.lo, np.nanmin(pad, 1))
    np.testing.assert_array_equal(env.hi, np.nanmax(pad, 1))
    assert env.peak == float(np.abs(x).max())


def test_memory_stays_flat_as_the_file_grows(rec, tmp_path: Path) -> None:
    peaks = {}
    for seconds in (30, 300):
        path = write(tmp_path / f"{seconds}.wav", tones([("neu", seconds / 2), ("ang", seconds / 2)]))
        result = analyse(rec, path, vad="none", batch_size=4)
        assert result.segments.end.iloc[-1] == pytest.approx(seconds)
        peaks[seconds] = result.peak_samples
    assert peaks[30] == peaks[300] <= 20 * SR + 4096  # one 20-s scan block (+ resampling context), never the file


# --- the analysis on known recordings ------------------------------------------------------------------------------


def test_a_long_file_of_known_pieces_gets_the_right_segments(rec, tmp_path: Path) -> None:
    parts = [("sil", 1.0), ("neu", 6.0), ("sil", 1.0), ("ang", 5.0), ("neu", 4.0), ("sil", 1.0)]
    path = write(tmp_path / "long.wav", tones(parts, sr=44100), sr=44100)  # any rate
    result = analyse(rec, path, vad="energy")
    got = [(r.start, r.end, r.label) for r in result.segments.itertuples()]
    assert [g[2] for g in got] == ["neu", "ang", "neu"]
    want = [(1.0, 7.0), (8.0, 13.0), (13.0, 17.0)]
    np.testing.assert_allclose([g[:2] for g in got], want, atol=0.15)  # pauses: VAD padding; change: a cell edge
    assert (result.segments.speaker == "").all()
    probs = result.segments[[f"prob_{lab}" for lab in LABELS]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.segments.confidence, probs.max(1), atol=1e-6)
    assert list(result.segments.columns[:4]) == ["start", "end", "speaker", "label"]
    assert len(result.speech) == 2 and result.warnings == []


def test_speakers_from_rttm_cut_segments_at_turns(rec, tmp_path: Path) -> None:
    path = write(tmp_path / "talk.wav", tones([("neu", 6.0), ("ang", 6.0)]))
    rttm = tmp_path / "d.rttm"
    rttm.write_text("SPEAKER talk 1 0 6.5 <NA> <NA> A <NA> <NA>\nSPEAKER talk 1 5.0 7.0 <NA> <NA> B <NA> <NA>\n")
    result = analyse(rec, path, vad="none", rttm=rttm)
    assert result.segments.equals(analyse(rec, path, vad="none", rttm=rttm, batch_size=8).segments)
    # B's turn (7 s) is longer: the overlap 5-6.5 is B's, so A speaks 0-5 (neu), B 5-12 (neu to 6, then ang)
    got = [(r.start, r.end, r.speaker, r.label) for r in result.segments.itertuples()]
    assert got[0] == (0.0, 5.0, "A", "neu") and got[-1][1:] == (12.0, "B", "ang")
    assert got[-1][0] in (5.0, 6.0)  # B's first second is covered by one window only, half of it ang
    assert [g[2] for g in got[1:]] == ["B"] * (len(got) - 1) and got[1][0] == 5.0
    other = analyse(rec, path, vad="none", rttm=rttm, file_id="talk", window=3.0, hop=1.5, smooth=1)
    assert other.segments.speaker.tolist()[0] == "A" and other.settings["window"] == 3.0


def test_adapt_normalises_each_speaker_with_their_own_statistics(
    rec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "talk.wav", tones([("neu", 6.0), ("ang", 6.0)]))
    rttm = tmp_path / "d.rttm"
    rttm.write_text("SPEAKER talk 1 0 6.5 <NA> <NA> A <NA> <NA>\nSPEAKER talk 1 5.0 7.0 <NA> <NA> B <NA> <NA>\n")
    seen: list[object] = []
    real = rec.predict_features

    def spy(hidden: torch.Tensor, frames: torch.Tensor, stats: object = None) -> dict:
        seen.append(stats)
        return real(hidden, frames, stats)

    monkeypatch.setattr(rec, "predict_features", spy)
    result = analyse(rec, path, vad="none", rttm=rttm, adapt=True, batch_size=8)  # batches mix both speakers
    expected = []
    for a, b in ((0.0, 5.0), (5.0, 12.0)):  # A's and B's speech, in non-overlapping windows
        feats = []
        for s, e in tile_bounds(a, b, 2.0):
            wav = load_audio(path, SR)[round(s * SR) : round(e * SR)]
            hidden, frames = rec.encoder.encode(wav[None], torch.ones(1))
            feats.append(hidden[0, :, : int(frames[0])].transpose(0, 1))
        expected.append(running_stats(feats))

    def same(x: tuple, y: tuple) -> bool:
        return torch.allclose(x[0], y[0]) and torch.allclose(x[1], y[1])

    assert seen and all(s is not None and any(same(s, e) for e in expected) for s in seen)
    assert all(any(same(s, e) for s in seen) for e in expected)  # both speakers' statistics were used
    assert result.segments.speaker.tolist()[0] == "A"
    # one emotion per speaker here: their statistics describe that emotion, and the warning says so
    assert any(w.startswith("--adapt, speaker A: speaker statistics from 2 clip(s), 5.0 s") for w in result.warnings)
    assert any(w.startswith("--adapt, speaker B: speaker statistics from 4 clip(s), 7.0 s") for w in result.warnings)


def test_dimensional_outputs_ride_along_as_extra_columns(rec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "a.wav", tones([("neu", 4.0)]))
    real = rec.predict_features

    def with_dims(hidden, frames, stats=None):
        out = real(hidden, frames, stats)
        out["dimensions"] = {"arousal": torch.full((len(hidden),), 0.25), "valence": torch.full((len(hidden),), -0.5)}
        return out

    monkeypatch.setattr(rec, "predict_features", with_dims)
    seg = analyse(rec, path, vad="none").segments
    assert list(seg.columns[-2:]) == ["arousal", "valence"]
    assert seg.arousal.tolist() == [0.25] and seg.valence.tolist() == [-0.5]


def test_recognizer_timeline_returns_the_segments_and_warns_about_silence(rec, tmp_path: Path) -> None:
    from cta_rnn.inference import UnreliableLabelWarning

    seg = rec.timeline(write(tmp_path / "a.wav", tones([("neu", 3.0), ("ang", 3.0)])), vad="none")
    assert isinstance(seg, pd.DataFrame) and seg.label.tolist() == ["neu", "ang"]
    with pytest.warns(UnreliableLabelWarning, match="silent"):
        empty = rec.timeline(write(tmp_path / "s.wav", np.zeros(3 * SR, np.float32)), vad="energy")
    assert empty.empty and "prob_neu" in empty.columns
    result = analyse(rec, tmp_path / "s.wav", vad="energy")
    assert plot_result(result, tmp_path / "empty.png").stat().st_size > 0  # a plot of no speech still draws


# --- command line ------------------------------------------------------------------------------------------------


def test_cli_prints_segments_and_writes_csv_json_and_plot(
    fold: Path, encoder: ToneEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path / "talk.wav", tones([("sil", 1.0), ("neu", 5.0), ("ang", 5.0), ("sil", 1.0)]))
    rttm = tmp_path / "d.rttm"
    rttm.write_text("SPEAKER talk 1 0.5 5.5 <NA> <NA> A <NA> <NA>\nSPEAKER talk 1 6.0 5.5 <NA> <NA> B <NA> <NA>\n")
    out = {k: tmp_path / "out" / f"t.{k}" for k in ("csv", "json", "png")}
    argv = ["--model", str(fold), str(path), "--vad", "energy", "--rttm", str(rttm), "--device", "cpu", "--quiet"]
    argv += ["--csv", str(out["csv"]), "--json", str(out["json"]), "--plot", str(out["png"])]
    assert main_timeline(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[:4] for ln in lines] == [["0.90", "6.00", "A", "neu"], ["6.00", "11.10", "B", "ang"]]
    csv = pd.read_csv(out["csv"], keep_default_na=False)
    assert csv.label.tolist() == ["neu", "ang"] and csv.speaker.tolist() == ["A", "B"]
    doc = json.loads(out["json"].read_text())
    assert doc["file"] == str(path) and doc["model"] == str(fold) and doc["labels"] == LABELS
    assert [s["label"] for s in doc["segments"]] == ["neu", "ang"] and doc["warnings"] == []
    assert doc["window"] == 2.0 and doc["hop"] == 1.0 and len(doc["speech"]) == 1
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_has_a_label_band_per_speaker_and_a_bar_per_segment() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "speaker": "A", "label": "neu"},
        {"start": 2.0, "end": 3.0, "speaker": "A", "label": "ang"},
        {"start": 3.5, "end": 6.0, "speaker": "B", "label": "ang"},
    ]
    cells = np.array([[0, 1], [1, 2], [2, 3], [3.5, 4.5], [4.5, 6.0]])
    probs = np.tile([0.7, 0.1, 0.1, 0.1], (5, 1))
    env = (np.linspace(0, 6, 50), -np.ones(50), np.ones(50))
    fig = timeline_figure(env, [(0.0, 3.0), (3.5, 6.0)], segments, LABELS, cells, probs)
    bands = next(ax for ax in fig.axes if ax.get_gid() == "bands")
    assert [t.get_text() for t in bands.get_yticklabels()] == ["A", "B"]
    assert sum(len(c.get_paths()) for c in bands.collections) == 3
    curves = fig.axes[2].lines
    assert len(curves) == 4 and np.isnan(curves[0].get_xdata()).sum() == 1  # a break between the two pieces


def test_cli_refuses_bad_input_with_one_line(
    fold: Path, encoder: ToneEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path / "talk.wav", tones([("neu", 3.0)]))
    rttm, bad = tmp_path / "d.rttm", tmp_path / "bad.rttm"
    rttm.write_text("SPEAKER talk 1 0 1 <NA> <NA> A <NA> <NA>\n")
    bad.write_text("SPEAKER talk 1 0 1 <NA> <NA> A <NA> <NA>\nSPEAKER talk 1 zero 1 <NA> <NA> A <NA> <NA>\n")
    base = ["--model", str(fold), str(path), "--device", "cpu", "--quiet"]
    cases = [
        (["--rttm", str(bad)], f"error: {bad}:2: onset 'zero' is not a number"),
        (["--csv", str(path)], f"error: --csv {path}: has an audio suffix (.wav)"),
        (["--rttm", str(rttm), "--json", str(rttm)], f"error: --json {rttm}: is one of the inputs: refusing to"),
        (["--json", str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.json")], "error: --plot and --json are"),
        (["--plot", str(tmp_path / "t.wav")], f"error: --plot {tmp_path / 't.wav'}: has an audio suffix (.wav)"),
        (["--window", "0.1"], "error: --window 0.1 s is too short: the model was trained on 2-s crops; use at least"),
        (["--smooth", "2"], "error: --smooth must be an odd number of hops >= 1"),
        (["--live", "--csv", str(tmp_path / "x.csv")], "error: --live reads standard input: give - as the input"),
    ]
    for extra, message in cases:
        assert main_timeline(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    rttm.write_text("SPEAKER other 1 0 1 <NA> <NA> A <NA> <NA>\n")
    assert main_timeline(base + ["--rttm", str(rttm)]) == 2
    assert capsys.readouterr().err == (
        f"error: {rttm}: no SPEAKER lines for file id 'talk' (it has other); pass --file_id to choose one\n"
    )
    assert main_timeline(["--model", str(fold), str(tmp_path / "missing.wav"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.wav'}: file not found\n"
    assert path.read_bytes()[:4] == b"RIFF" and rttm.read_text().startswith("SPEAKER other")  # inputs untouched
    assert not (tmp_path / "a.json").exists()


# --- live --------------------------------------------------------------------------------------------------------


def test_live_from_a_pipe_gives_one_line_per_hop_as_the_audio_arrives(rec) -> None:
    pcm = (tones([("neu", 4.0), ("ang", 4.0)]) * 32767).astype("<i2").tobytes()
    r, w = os.pipe()
    first_row = threading.Event()

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(pcm[: 3 * SR * 2])  # 3 s, then wait until a line came out: live does not wait for the end
            out.flush()
            first_row.wait(timeout=60)
            for i in range(3 * SR * 2, len(pcm), 4000):
                out.write(pcm[i : i + 4000])

    writer = threading.Thread(target=feed)
    writer.start()
    rows = []
    with os.fdopen(r, "rb") as stream:
        for row in iter_live(rec, stream, window=2.0, hop=1.0, vad="none"):
            rows.append(row)
            first_row.set()
    writer.join(timeout=60)
    assert [(r["start"], r["end"]) for r in rows] == [(k - 2.0, float(k)) for k in range(2, 9)]
    assert [r["label"] for r in rows] == ["neu", "neu", "neu"] + [rows[3]["label"]] + ["ang", "ang", "ang"]
    assert all(0 < r["latency"] < 5 for r in rows)


def test_live_reads_a_wav_header_and_marks_silence(fold: Path, encoder: ToneEncoder, monkeypatch, capsys) -> None:
    x = tones([("sil", 3.0), ("ang", 3.0)], sr=8000)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x, x], 1), 8000, format="WAV", subtype="PCM_16")  # 8 kHz stereo with a header

    class Stdin:
        buffer = io.BytesIO(buf.getvalue())

    monkeypatch.setattr("sys.stdin", Stdin)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main_timeline(["--model", str(fold), "-", "--live", "--vad", "energy", "--hop", "0.5", "--quiet"]) == 0
        assert torch.get_num_threads() == 2  # live runs on 1 thread, the caller's count restored afterwards
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9  # (6 s - 2 s window) / 0.5 s hop + 1
    first, last = lines[0].split("\t"), lines[-1].split("\t")
    assert first[:3] == ["0.00", "2.00", "-"] and last[:3] == ["4.00", "6.00", "ang"]
    assert last[4].startswith("latency=") and last[4].endswith("s")
