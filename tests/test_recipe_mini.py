"""The mini recipe for real on a tiny setting: synthesis, dump (embedded Whisper tiny.en), training, scoring."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cta_rnn.audio import load_audio
from cta_rnn.hparams_schema import experiment_suffix

pytestmark = pytest.mark.slow  # whole recipe runs: `pytest -m "not slow"` leaves them out

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of recipes/mini next to the real shared driver, so outputs stay out of the checkout."""
    base = tmp_path_factory.mktemp("recipes")
    shutil.copytree(ROOT / "recipes" / "mini", base / "mini", ignore=shutil.ignore_patterns("data", "dump", "exp"))
    (base / "shared").symlink_to(ROOT / "recipes" / "shared")
    return base / "mini"


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    cmd = ["./run.sh", "--python", sys.executable, *args]
    return subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True, timeout=900, check=False)


TINY = [
    "--prep_opts",
    "--n_sentences 2 --speakers 6",
    "--folds",
    "1",
    "--train_args",
    "--number_of_epochs=1 --batch_size=8 --max_train_seconds=1.0",
]
SUFFIX = "_" + experiment_suffix({"number_of_epochs": 1, "batch_size": 8, "max_train_seconds": 1.0})
"""The training overrides name the experiments (cfg<hash>: too long to read as themselves)."""
ENC = "whisper_tiny_en_window10_25hz"
"""The mini recipe's encoder (recipes/mini/run.sh)."""
EXP = f"cta_rnn_{ENC}_loso_speaker{SUFFIX}"


def test_mini_recipe_stages_0_to_3(recipe: Path) -> None:
    p = run(recipe, "--stage", "0", "--stop_stage", "3", *TINY)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    for n in range(4):
        assert f"Stage {n}:" in p.stderr
    manifest = pd.read_csv(recipe / "data" / "manifest.csv")
    assert len(manifest) == 2 * 6 * 4 and manifest["speaker"].nunique() == 6
    assert (recipe / "dump" / ENC / "DONE").is_file()
    exp = recipe / "exp" / EXP
    pred = pd.read_csv(exp / "fold1" / "predictions.csv")
    assert len(pred) == 8 and {"att_layer0", "att_layer4"} <= set(pred.columns)  # 5 Whisper tiny.en layers
    res = json.loads((exp / "results.json").read_text())
    assert res["folds_scored"] == [1]
    for png in ("confusion.png", "channel_attention.png"):
        assert (exp / png).stat().st_size > 1000
    assert EXP in (recipe / "RESULTS.md").read_text()
    assert (exp / "run.sh").is_file() and json.loads((exp / "encoder.json").read_text())["dim"] == 384


def test_rerun_skips_finished_stages(recipe: Path) -> None:
    pred = recipe / "exp" / EXP / "fold1" / "predictions.csv"
    if not pred.exists():
        pytest.skip("needs the previous test's outputs")
    before = pred.stat().st_mtime
    p = run(recipe, "--stage", "1", "--stop_stage", "2", *TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "is complete" in p.stderr, p.stderr[-3000:]
    fold_out = (pred.parent / "stdout.log").read_text()  # --nj 2: each fold's output goes to its stdout.log
    assert "already finished" in p.stderr + fold_out
    assert pred.stat().st_mtime == before


def test_unknown_option_fails_loudly(recipe: Path) -> None:
    p = run(recipe, "--no_such_option", "1")
    assert p.returncode != 0 and "unknown option --no_such_option" in p.stderr


def test_stage4_ablation_and_layer_sweep(recipe: Path) -> None:
    if not (recipe / "dump" / ENC / "DONE").exists():
        pytest.skip("needs the first test's dump")
    p = run(recipe, "--stage", "4", "--stop_stage", "4", "--ablations", "superb", "--sweep_layers", "0 4", *TINY)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    for name in ("superb", "single_layer0", "single_layer4"):
        res = json.loads((recipe / "exp" / f"{name}_{ENC}_loso_speaker{SUFFIX}" / "results.json").read_text())
        assert res["folds_scored"] == [1]
    single4 = recipe / "exp" / f"single_layer4_{ENC}_loso_speaker{SUFFIX}"
    pred = pd.read_csv(single4 / "fold1" / "predictions.csv")
    assert [c for c in pred.columns if c.startswith("att_layer")] == ["att_layer4"]
    assert (recipe / "exp" / f"layer_sweep_{ENC}_loso_speaker{SUFFIX}.png").stat().st_size > 1000
    table = (recipe / "exp" / f"ablations_{ENC}_loso_speaker{SUFFIX}.md").read_text()
    assert f"| superb_{ENC}_loso_speaker{SUFFIX} | " in table and "Wilcoxon p" in table


def trained_fold(recipe: Path) -> Path:
    fold = recipe / "exp" / EXP / "fold1"
    if not (fold / "model.json").exists():
        pytest.skip("needs the first test's trained fold")
    return fold


def test_export_and_recognizer_reproduce_the_test_predictions(recipe: Path, tmp_path: Path) -> None:
    from cta_rnn.inference import EmotionRecognizer, export_fold

    fold = trained_fold(recipe)
    out = export_fold(fold, tmp_path / "model")
    for name in (
        "model.json",
        "model.ckpt",
        "label_encoder.txt",
        "hyperparams.yaml",
        "README.md",
        "scores.json",
    ):
        assert (out / name).is_file(), name
    with pytest.raises(FileExistsError):
        export_fold(fold, out)
    rec = EmotionRecognizer.from_dir(out)
    pred = pd.read_csv(fold / "predictions.csv")
    manifest = pd.read_csv(recipe / "data" / "manifest.csv").set_index("ID")
    wavs = [manifest.loc[i, "wav"] for i in pred["ID"]]
    # the fold was trained with speaker normalisation: the test speaker's own statistics, as in training
    feats = []
    for w in wavs:
        hidden, frames = rec.features(load_audio(w)[None], torch.ones(1))
        feats.append(hidden[0, :, : int(frames[0])])
    stats = rec.speaker_stats(feats)
    for w, row in zip(wavs, pred.itertuples()):
        got = rec.predict_file(w, stats)
        assert got["label"] == row.predicted
        assert abs(got["probs"]["neu"] - row.prob_neu) < 0.02 and abs(got["probs"]["sad"] - row.prob_sad) < 0.02
        assert torch.all(got["temporal"] >= 0) and abs(float(got["temporal"].sum()) - 1) < 1e-4


def test_speechbrain_from_hparams_classify_file(recipe: Path, tmp_path: Path) -> None:
    """SpeechBrain's Pretrained convention on an exported fold and on the fold folder itself."""
    from cta_rnn.inference import EmotionRecognizer, export_fold

    fold = trained_fold(recipe)
    out = export_fold(fold, tmp_path / "model")
    wav = pd.read_csv(recipe / "data" / "manifest.csv")["wav"].iloc[0]
    ref = EmotionRecognizer.from_dir(out).predict_file(wav)
    for source in (out, fold):
        rec = EmotionRecognizer.from_hparams(source=str(source), savedir=str(tmp_path / f"sd_{source.name}"))
        probs, score, index, label = rec.classify_file(wav)
        assert probs.shape == (1, 4) and abs(float(probs.sum()) - 1) < 1e-5
        assert label == [ref["label"]] and rec.labels[int(index)] == ref["label"]
        assert abs(float(score) - max(ref["probs"].values())) < 1e-5


def test_normalisation_travels_with_the_model(recipe: Path) -> None:
    """Speaker-normalisation statistics are buffers saved with the model: .to() moves them (meta device here)."""
    from cta_rnn.inference import EmotionRecognizer

    rec = EmotionRecognizer.from_dir(trained_fold(recipe))
    norm = rec.model.normalizer
    saved = {k.split(".")[-1] for k in rec.model.state_dict()}
    assert norm.mode == "speaker" and {"fallback_mean", "fallback_std", "mean", "std"} <= saved
    assert float(norm.fallback_std.abs().sum()) > 0 and not torch.allclose(norm.fallback_mean, torch.zeros(1))
    norm = norm.to("meta")
    x = torch.zeros(2, norm.mean.shape[0], 30, norm.mean.shape[1], device="meta")
    assert norm(x).device.type == "meta"  # fallback statistics
    norm.set_speakers({"s": (torch.zeros(norm.mean.shape), torch.ones(norm.mean.shape))})
    assert norm(x, torch.tensor([0, -1])).device.type == "meta"  # adapted statistics, fallback for -1


def test_predict_cli_lists_bad_files_and_writes_outputs(recipe: Path, tmp_path: Path) -> None:
    import soundfile as sf

    from cta_rnn.cli import main

    fold = trained_fold(recipe)
    manifest = pd.read_csv(recipe / "data" / "manifest.csv")
    good = manifest["wav"].tolist()[:2]
    data, sr = sf.read(good[0])
    stereo = tmp_path / "stereo 44k.wav"
    sf.write(stereo, np.stack([data, data], 1).repeat(2, 0)[: len(data) * 2], sr * 2)  # 2 channels, 2x rate
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    rc = main(
        [
            "predict",
            "--model",
            str(fold),
            *good,
            str(stereo),
            str(broken),
            "--csv",
            str(tmp_path / "p.csv"),
            "--json",
            str(tmp_path / "p.json"),
            "--plot",
            str(tmp_path / "plots"),
            "--adapt",
        ]
    )
    assert rc == 0
    rows = pd.read_csv(tmp_path / "p.csv")
    assert len(rows) == 3 and set(rows["label"]) <= {"neu", "hap", "ang", "sad"}
    failed = json.loads((tmp_path / "p.json").read_text())["failed"]
    assert [f["file"] for f in failed] == [str(broken)] and "unreadable" in failed[0]["reason"]
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3
    rc = main(["predict", "--model", str(fold), good[0], "--segment", "1.0", "--csv", str(tmp_path / "s.csv")])
    seg = pd.read_csv(tmp_path / "s.csv")
    assert rc == 0 and len(seg) >= 2 and seg["start"].iloc[1] == 1.0


def test_recognizer_refuses_a_mismatched_label_set_or_encoder(recipe: Path, tmp_path: Path) -> None:
    from cta_rnn.inference import EmotionRecognizer, export_fold

    out = export_fold(trained_fold(recipe), tmp_path / "model")
    with pytest.raises(ValueError, match="the model was trained on layers"):
        EmotionRecognizer.from_dir(out, encoder_overrides={"layers": [0, 1]})
    lab = out / "label_encoder.txt"
    lab.write_text(lab.read_text().replace("'sad'", "'bored'"))
    with pytest.raises(ValueError, match="does not match model.json labels"):
        EmotionRecognizer.from_dir(out)
