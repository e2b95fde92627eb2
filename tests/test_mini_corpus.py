"""Tests for the synthetic mini corpus: counts, columns, determinism, resumability, visible class prosody."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cta_rnn import EMOTIONS
from cta_rnn.artifacts import MANIFEST_COLUMNS, read_manifest
from cta_rnn.corpora import mini

TINY = {"n_sentences": 2, "speakers": 2, "jitter": 1.0, "seed": 7}


def wav_bytes(df: pd.DataFrame) -> dict[str, bytes]:
    """ID -> raw file bytes."""
    return {r.ID: Path(r.wav).read_bytes() for r in df.itertuples()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("mini")
    return out, mini.make_mini_corpus(out, **TINY)


def test_counts_columns_and_files(corpus: tuple[Path, pd.DataFrame]) -> None:
    out, df = corpus
    assert len(df) == 2 * 2 * len(EMOTIONS) and df["ID"].is_unique
    assert set(MANIFEST_COLUMNS) | {"text"} <= set(df.columns)
    assert (df.groupby(["speaker", "emotion"]).size() == 2).all()
    assert sorted(df["speaker"].unique()) == ["s01F", "s01M"] and set(df["session"]) == {1}
    assert set(df["gender"]) == {"F", "M"} and (df["condition"] == "tts").all()
    assert not df["ID"].str.contains(r"[+ /]").any()
    for r in df.itertuples():
        assert Path(r.wav).is_absolute() and Path(r.wav).parent == out.resolve() / "wav" / r.speaker
        info = sf.info(r.wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert r.duration == pytest.approx(info.frames / 16000, abs=1e-3) and r.duration > 1
    assert len(pd.read_csv(out / "prosody.csv")) == len(df)


def test_deterministic_across_runs(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    _, df = corpus
    again = mini.make_mini_corpus(tmp_path / "a", **TINY)
    assert wav_bytes(again) == wav_bytes(df)
    pd.testing.assert_frame_equal(again.drop(columns="wav"), df.drop(columns="wav"))
    other = mini.make_mini_corpus(tmp_path / "b", **{**TINY, "seed": 8})
    differ = [k for k, v in wav_bytes(other).items() if v != wav_bytes(df)[k]]
    assert len(differ) >= len(df) // 2


def test_resumable(corpus: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    out, df = corpus
    before = wav_bytes(df)
    victim = df["wav"].iloc[5]
    Path(victim).unlink()
    made = []
    render = mini.render
    monkeypatch.setattr(mini, "render", lambda job: made.append(job["wav"]) or render(job))
    again = mini.make_mini_corpus(out, **TINY)
    assert made == [victim]
    assert wav_bytes(again) == before
    pd.testing.assert_frame_equal(again, df)
    made.clear()
    mini.make_mini_corpus(out, **{**TINY, "jitter": 0.5})  # other parameters: every wav is remade
    assert len(made) == len(df)


def test_class_prosody_is_visible(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, df = corpus
    rms = {r.ID: float(np.sqrt(np.mean(sf.read(r.wav)[0] ** 2))) for r in df.itertuples()}
    df = df.assign(rms=df["ID"].map(rms))
    means = df.groupby("emotion")[["duration", "rms"]].mean()
    assert means.at["sad", "duration"] > means.at["ang", "duration"] * 1.2
    assert means.at["sad", "rms"] < means.at["ang", "rms"] * 0.8
    assert means.at["sad", "duration"] > means.at["neu", "duration"] > means.at["ang", "duration"]


def test_prosody_draws() -> None:
    p0 = mini.draw_prosody("hap", 0.0, 1, 0, 0)
    assert {k: p0[k] for k in mini.PROSODY_MEANS["hap"]} == mini.PROSODY_MEANS["hap"]
    draws = pd.DataFrame([mini.draw_prosody("sad", 3.0, 1, v, s) for v in range(10) for s in range(40)])
    for name, (lo, hi) in mini.LIMITS.items():
        assert draws[name].between(lo, hi).all()
    assert mini.draw_prosody("ang", 1.0, 5, 2, 3) == mini.draw_prosody("ang", 1.0, 5, 2, 3)


def test_cli_writes_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mini.main(["--out", str(tmp_path), "--n_sentences", "1", "--speakers", "2", "--seed", "3"]) == 0
    df = read_manifest(tmp_path / "manifest.csv", MANIFEST_COLUMNS)
    assert len(df) == 8 and "s01M" in capsys.readouterr().out
    with pytest.raises(ValueError, match="n_sentences"):
        mini.make_mini_corpus(tmp_path, n_sentences=1000)
