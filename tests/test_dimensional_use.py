"""Dimensional emotion in use: EmotionRecognizer (folder and SpeechBrain loader), export, ``cta-rnn predict``,
the timeline, and the cross-corpus test path carry arousal/valence/dominance on the corpus's scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_timeline import ToneEncoder, tones, write
from toy_data import toy_training_argv

DIMS = ["arousal", "valence", "dominance"]


def train(root: Path, task: str) -> Path:
    from cta_rnn.train import main

    out = root / "exp" / f"toy_{task}" / "fold1"
    argv = toy_training_argv(
        root, out, f"--task={task}", "--number_of_epochs=4", "--batch_size=8", "--lr=0.005",
        n_per_speaker=16, dimensions=True,
    )  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def folds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {task: train(tmp_path_factory.mktemp(task), task) for task in ("both", "dimensional")}


@pytest.fixture()
def encoder(monkeypatch: pytest.MonkeyPatch) -> ToneEncoder:
    import cta_rnn.encoders

    enc = ToneEncoder()
    monkeypatch.setattr(cta_rnn.encoders, "build_encoder", lambda spec, device=None: enc)
    return enc


def test_recognizer_and_its_export_give_the_same_dimensions(folds, encoder, tmp_path: Path) -> None:
    from cta_rnn.inference import EmotionRecognizer, export_fold

    wav = write(tmp_path / "a.wav", tones([("neu", 2.0)]))
    rec = EmotionRecognizer.from_dir(folds["both"], encoder=encoder)
    out = rec.predict_file(wav)
    assert list(out["dimensions"]) == DIMS and out["label"] in rec.labels
    stats = json.loads((folds["both"] / "model.json").read_text())["dimension_stats"]
    assert all(np.isfinite(v) for v in out["dimensions"].values())
    export_fold(folds["both"], tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert "- dimensions: arousal, valence, dominance, predicted on the rating scale" in card
    assert f"arousal (training mean {stats['arousal'][0]:.2f}" in card and "held-out test arousal: CCC" in card
    loaded = EmotionRecognizer.from_hparams(tmp_path / "model", savedir=tmp_path / "sb", run_opts={"device": "cpu"})
    assert loaded.dimensions == DIMS
    again = loaded.predict_file(wav)
    for d in DIMS:  # the same weights and scaling buffers through SpeechBrain's Pretrainer
        assert again["dimensions"][d] == pytest.approx(out["dimensions"][d], abs=1e-5)


def test_a_dimensional_only_model_has_no_classes(folds, encoder, tmp_path: Path) -> None:
    from cta_rnn.inference import EmotionRecognizer

    wav = write(tmp_path / "a.wav", tones([("ang", 2.0)]))
    rec = EmotionRecognizer.from_dir(folds["dimensional"], encoder=encoder)
    out = rec.predict_file(wav)
    assert rec.labels == [] and out["label"] == "" and out["probs"] == {} and list(out["dimensions"]) == DIMS
    with pytest.raises(ValueError, match="predicts arousal, valence, dominance only"):
        rec.classify_file(wav)


def test_predict_cli_prints_and_writes_the_dimensions(folds, encoder, tmp_path: Path, capsys) -> None:
    from cta_rnn.commands import main_predict

    wav = write(tmp_path / "a.wav", tones([("neu", 2.0)]))
    for task in ("both", "dimensional"):
        csv = tmp_path / f"{task}.csv"
        assert main_predict(["--model", str(folds[task]), str(wav), "--csv", str(csv), "--device", "cpu"]) == 0
        fields = capsys.readouterr().out.strip().split("\t")
        row = pd.read_csv(csv).iloc[0]
        dims = " ".join(f"{d}={row[d]:.2f}" for d in DIMS)
        assert fields[-1] == dims and (fields[1] == "-") == (task == "dimensional")


def test_timeline_carries_the_dimensions(folds, encoder, tmp_path: Path) -> None:
    from cta_rnn.inference import EmotionRecognizer
    from cta_rnn.timeline import analyse

    wav = write(tmp_path / "talk.wav", tones([("neu", 4.0), ("ang", 4.0)]))
    both = analyse(EmotionRecognizer.from_dir(folds["both"], encoder=encoder), wav, vad="none")
    assert list(both.segments.columns[-3:]) == DIMS and both.segments.label.ne("").all()
    dim = analyse(EmotionRecognizer.from_dir(folds["dimensional"], encoder=encoder), wav, vad="none")
    cells = dim.cells
    assert len(dim.segments) == len(cells) and (dim.segments.label == "").all()  # one segment per hop cell
    assert np.allclose(dim.segments[DIMS].to_numpy(float), cells[DIMS].to_numpy(float), atol=1e-6)


def test_cross_corpus_path_scores_the_targets_ratings(folds, tmp_path: Path) -> None:
    from cta_rnn.artifacts import read_model_spec
    from cta_rnn.checkpoint import load_fold_model
    from cta_rnn.cross_eval import test_on_target
    from cta_rnn.store import EmbeddingStore

    root = folds["both"].parents[2]
    store = EmbeddingStore(root / "store")
    rows = pd.read_csv(root / "fold1" / "test.csv", dtype=str, keep_default_na=False)
    model, spec = load_fold_model(folds["both"])
    frame = test_on_target(model, spec, store, rows)
    fold_pred = pd.read_csv(folds["both"] / "predictions.csv", dtype={"ID": str}, keep_default_na=False)
    assert list(frame.columns) == list(fold_pred.columns)
    merged = frame.merge(fold_pred, on="ID", suffixes=("", "_fold"))
    assert np.allclose(merged["pred_arousal"], merged["pred_arousal_fold"], atol=1e-3)
    assert read_model_spec(folds["both"])["select_by"] == "UA"
    torch.testing.assert_close(model.regressor.mean, torch.tensor([spec["dimension_stats"][d][0] for d in DIMS]))


def test_timeline_cli_prints_the_dimensions_also_without_classes(folds, encoder, tmp_path: Path, capsys) -> None:
    from cta_rnn.commands import main_timeline

    wav = write(tmp_path / "talk.wav", tones([("neu", 3.0), ("ang", 3.0)]))
    for task in ("both", "dimensional"):
        argv = ["--model", str(folds[task]), str(wav), "--vad", "none", "--device", "cpu", "--quiet"]
        assert main_timeline(argv) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines and all(line.split("\t")[-1].startswith("arousal=") for line in lines)
        if task == "dimensional":
            assert all(line.split("\t")[3:5] == ["-", "-"] for line in lines)  # no label, no confidence
