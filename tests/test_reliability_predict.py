"""Issue 15, ``cta-rnn predict`` / ``export`` edges on a toy fold (synthetic store, 2-s training crops) with a
stand-in encoder: streamed lines, ``--segment`` checks, unique plot names, warnings, folders without audio,
an experiment folder as ``--model``, and unfinished folds (refused unless ``--allow_unfinished``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from toy_data import train_toy_fold

from cta_rnn.commands import main_export, main_predict
from cta_rnn.predict import plot_stems

ROOT = Path(__file__).resolve().parents[1]


class FakeEncoder:
    """3 layers x 16 dims at 50 frames/s, features drawn from the waveform (deterministic)."""

    layers, dim, sample_rate, frame_rate = [0, 1, 2], 16, 16000, 50.0

    def __init__(self, on_encode=None) -> None:
        self.on_encode = on_encode

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_encode is not None:
            self.on_encode()
        frames = max(1, wavs.shape[1] // 320)
        gen = torch.Generator().manual_seed(int(wavs.abs().sum() * 1000) % 2**31)
        return torch.randn(wavs.shape[0], 3, frames, 16, generator=gen), torch.full((wavs.shape[0],), frames)


@pytest.fixture(scope="module")
def fold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy_fold(tmp_path_factory.mktemp("toy"), "--number_of_epochs=2", "--batch_size=4")


@pytest.fixture()
def encoder(monkeypatch: pytest.MonkeyPatch) -> FakeEncoder:
    import cta_rnn.encoders

    enc = FakeEncoder()
    monkeypatch.setattr(cta_rnn.encoders, "build_encoder", lambda spec, device=None: enc)
    return enc


def wav(path: Path, seconds: float = 1.0, amplitude: float = 0.1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(0, amplitude, int(16000 * seconds)).astype("float32")
    sf.write(path, data, 16000)
    return path


def unfinished(fold: Path, tmp_path: Path) -> Path:
    """A copy of the fold as a training killed before its test: no test_results.json."""
    copy = tmp_path / "killed" / "fold1"
    shutil.copytree(fold, copy)
    (copy / "test_results.json").unlink()
    return copy


def test_lines_are_printed_as_each_file_is_done(
    fold: Path, encoder: FakeEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    files = [wav(tmp_path / f"{n}.wav", seed=i) for i, n in enumerate("abc")]
    printed_before_encoding: list[str] = []
    encoder.on_encode = lambda: printed_before_encoding.append(capsys.readouterr().out)
    assert main_predict(["--model", str(fold), *map(str, files), "--device", "cpu"]) == 0
    assert printed_before_encoding[0] == ""
    assert printed_before_encoding[1].startswith(f"{files[0]}\t")  # a's line was out before b was encoded
    assert printed_before_encoding[2].startswith(f"{files[1]}\t")


def test_segment_must_be_positive_and_not_absurdly_short(
    fold: Path, encoder: FakeEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip = str(wav(tmp_path / "a.wav", seconds=2.0))
    assert main_predict(["--model", str(fold), clip, "--segment", "-1"]) == 2
    assert capsys.readouterr().err == "error: --segment must be > 0 seconds, got -1\n"
    assert main_predict(["--model", str(fold), clip, "--segment", "0.01"]) == 2
    assert capsys.readouterr().err == (
        "error: --segment 0.01 s is too short: the model was trained on 2-s crops; use at least 0.5 s\n"
    )
    assert main_predict(["--model", str(fold), clip, "--segment", "0.5", "--device", "cpu"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_plot_names_are_unique_for_same_named_files(fold: Path, encoder: FakeEncoder, tmp_path: Path) -> None:
    files = [wav(tmp_path / "in" / p, seed=i) for i, p in enumerate(("a/x.wav", "b/x.wav", "a/x.flac"))]
    assert plot_stems(files) == ["a__x.wav", "b__x", "a__x.flac"]
    assert plot_stems([files[0], files[0]]) == ["x", "x-2"]
    assert plot_stems([files[1]]) == ["x"]
    plots = tmp_path / "plots"
    assert main_predict(["--model", str(fold), *map(str, files), "--plot", str(plots), "--device", "cpu"]) == 0
    assert sorted(p.name for p in plots.iterdir()) == ["a__x.flac.png", "a__x.wav.png", "b__x.png"]


def test_silent_short_and_long_clips_are_warned_about(
    fold: Path, encoder: FakeEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    silent = wav(tmp_path / "silent.wav", amplitude=0.0)
    short = wav(tmp_path / "short.wav", seconds=0.05)
    long = wav(tmp_path / "long.wav", seconds=10.0)
    normal = wav(tmp_path / "normal.wav", seconds=2.0)
    out = tmp_path / "p.json"
    args = ["--model", str(fold), *map(str, (silent, short, long, normal)), "--json", str(out), "--device", "cpu"]
    assert main_predict(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"WARNING: {silent}: silent (peak amplitude 0.0e+00): its label means nothing" in err
    short_warning = "0.05 s, far shorter than the 2-s crops the model was trained on: its label is unreliable"
    assert f"WARNING: {short}: {short_warning}" in err
    assert any(ln.startswith(f"WARNING: {long}: 10.0 s, much longer") and "--segment 2" in ln for ln in err)
    assert not any(str(normal) in ln for ln in err)
    result = json.loads(out.read_text())
    assert len(result["predictions"]) == 4 and [w["file"] for w in result["warnings"]] == list(
        map(str, (silent, short, long))
    )


def test_a_folder_without_audio_is_an_error(
    fold: Path, encoder: FakeEncoder, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    assert main_predict(["--model", str(fold), str(empty), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {empty}: no audio files in this folder (looked for .aif, .aiff, .flac")
    assert main_predict(["--model", str(fold), str(empty), str(wav(tmp_path / "a.wav")), "--device", "cpu"]) == 1


def test_an_experiment_folder_as_model_names_its_folds(fold: Path, capsys: pytest.CaptureFixture) -> None:
    exp = fold.parent
    assert main_predict(["--model", str(exp), "x.wav"]) == 2
    assert capsys.readouterr().err == (
        f"error: {exp} is an experiment folder: pass one of its folds (fold1), e.g. --model {fold}\n"
    )
    assert main_export([str(exp), str(exp.parent / "model")]) == 1
    assert "is an experiment folder" in capsys.readouterr().err


def test_unfinished_fold_is_refused_unless_allowed(
    fold: Path, encoder: FakeEncoder, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    killed = unfinished(fold, tmp_path)
    clip = str(wav(tmp_path / "a.wav"))
    assert main_predict(["--model", str(killed), clip]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {killed}: training did not finish") and "--allow_unfinished" in err
    assert main_predict(["--model", str(killed), clip, "--allow_unfinished", "--device", "cpu"]) == 0
    assert f"{killed}: training did not finish; using its best checkpoint so far" in caplog.text
    assert capsys.readouterr().out.startswith(f"{clip}\t")


def test_export_of_an_unfinished_fold_needs_the_flag_and_warns(fold: Path, tmp_path: Path) -> None:
    killed = unfinished(fold, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def export(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "cta_rnn.cli", "export", str(killed), str(tmp_path / "model"), *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)

    p = export()
    assert p.returncode == 1 and p.stderr.startswith(f"error: {killed}: training did not finish")
    assert "Traceback" not in p.stderr and not (tmp_path / "model").exists()
    p = export("--allow_unfinished")
    assert p.returncode == 0, p.stderr
    assert f"WARNING: {killed}: training did not finish; using its best checkpoint so far" in p.stderr
    assert (tmp_path / "model" / "model.ckpt").is_file()
