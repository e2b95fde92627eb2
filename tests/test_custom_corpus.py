"""Bring-your-own-corpus recipe: CSV and folder prep, IDs, the ``given`` split, every error, and one run of
recipes/custom stages 0-3 on a 3-label corpus (embedded Whisper tiny.en, trimmed input; 1 fold, 1 epoch)."""

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
import soundfile as sf
import yaml

from cta_rnn.corpora.custom import make_ids, prepare_custom, supported_protocols, write_label_overrides
from cta_rnn.hparams_schema import experiment_suffix
from cta_rnn.prepare import main as prepare_main
from cta_rnn.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["bored", "calm", "excited"]
SPEAKERS = {"ann": "train", "bob": "train", "cat": "valid", "dan": "test"}


def tone(path: Path, sr: int = 16000, channels: int = 1, seconds: float = 0.3, seed: int = 0) -> Path:
    """A short noise clip (soundfile picks the format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(0, 0.1, (int(sr * seconds), channels)).astype("float32")
    sf.write(path, data, sr)
    return path


def build_tree(base: Path, per_cell: int = 2) -> Path:
    """``<emotion>/<speaker>_<i>.<ext>``: 3 labels x 4 speakers x per_cell; ann's clips are 44.1-kHz stereo flac."""
    root = base / "tree"
    for e, emo in enumerate(LABELS):
        for s, spk in enumerate(SPEAKERS):
            for i in range(per_cell):
                stereo = spk == "ann"
                name = f"{spk}_{i}.{'flac' if stereo else 'wav'}"
                tone(root / emo / name, 44100 if stereo else 16000, 2 if stereo else 1, seed=e * 100 + s * 10 + i)
    (root / "calm" / "notes.txt").write_text("not audio")
    return root


def write_csv(base: Path, rows: list[dict], name: str = "corpus.csv") -> Path:
    path = base / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def csv_rows(tree: Path, split: bool = True) -> list[dict]:
    """One CSV row per file of the tree (paths relative to the CSV), sessions ann+bob=s1, cat=s2, dan=s3."""
    rows = []
    for f in sorted(tree.glob("*/*_*.*")):
        spk = f.stem.split("_")[0]
        row = {"path": str(f.relative_to(tree.parent)), "emotion": f" {f.parent.name} ", "speaker": spk}
        row.update(session={"ann": "s1", "bob": "s1", "cat": "s2", "dan": "s3"}[spk], text=f"hello {f.stem}")
        if split:
            row["split"] = SPEAKERS[spk]
        rows.append(row)
    return rows


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


def test_prepare_from_csv(tree: Path, tmp_path: Path) -> None:
    rows = csv_rows(tree)
    rows[0]["path"] = str((tree.parent / rows[0]["path"]).resolve())  # absolute paths work too
    out = tmp_path / "data"
    m = prepare("custom", write_csv(tmp_path, rows), out, protocols=["loso_speaker", "given"], log=lambda s: None)
    assert len(m) == 24 and sorted(m["emotion"].unique()) == LABELS  # labels stripped
    assert list(m.columns) == ["ID", "wav", "duration", *"emotion speaker session gender text condition split".split()]
    assert all(Path(w).is_absolute() and Path(w).is_file() for w in m["wav"])
    assert set(m["duration"]) == {0.3} and set(m["condition"]) == {""} and m["ID"].is_unique
    assert m.groupby("speaker")["session"].first().to_dict() == {"ann": "s1", "bob": "s1", "cat": "s2", "dan": "s3"}
    assert sorted(m["ID"])[:3] == ["ann_0", "ann_0-2", "ann_0-3"]  # same stem under 3 labels
    given = {s: pd.read_csv(out / "folds" / "given" / "fold1" / f"{s}.csv") for s in ("train", "valid", "test")}
    assert [len(given[s]) for s in ("train", "valid", "test")] == [12, 6, 6]
    assert set(given["test"]["speaker"]) == {"dan"}
    summary = json.loads((out / "folds" / "given" / "folds.json").read_text())
    assert summary["folds"]["1"]["train"]["counts"] == {"bored": 4, "calm": 4, "excited": 4}
    assert len(list((out / "folds" / "loso_speaker").glob("fold?"))) == 4
    assert write_label_overrides(out / "manifest.csv", out / "train_overrides.yaml") == LABELS
    assert yaml.safe_load((out / "train_overrides.yaml").read_text()) == {"labels": LABELS}


def test_prepare_from_folder(tree: Path) -> None:
    m = prepare_custom(tree, log=lambda s: None)
    assert len(m) == 24 and m["speaker"].value_counts().to_dict() == dict.fromkeys(SPEAKERS, 6)
    assert (m["session"] == m["speaker"]).all() and "split" not in m
    assert m.loc[m["wav"].str.endswith("bored/ann_1.flac"), "ID"].item() == "ann_1"
    assert m.loc[m["wav"].str.endswith("excited/dan_0.wav"), "ID"].item() == "dan_0-3"
    assert m["ID"].tolist() == prepare_custom(tree, log=lambda s: None)["ID"].tolist()  # deterministic
    assert supported_protocols(tree) == ["loso_speaker"]


def test_ids_are_safe_and_unique() -> None:
    ids = make_ids(["a b", "a b", "x", "x"], ["/p/2/u:1.wav", "/p/1/u:1.wav", "/q/x_y.wav", "/q/x_y-2.wav"])
    assert ids == ["a_b_u_1-2", "a_b_u_1", "x_y", "x_y-2"]
    assert make_ids(["u"] * 3, ["/b/u_1.wav", "/a/u_1.wav", "/a/u_1-2.wav"]) == ["u_1-3", "u_1", "u_1-2"]


def _corpus_with(tmp_path: Path, tree: Path, edit) -> Path:
    rows = csv_rows(tree)
    edit(rows)
    return write_csv(tmp_path, rows)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r[0].update(mood="x"), r"unknown column\(s\) \['mood'\]; allowed: \['path', 'emotion', 'speaker'\]"),
        (lambda r: [x.pop("speaker") for x in r], r"missing column\(s\) \['speaker'\]"),
        (lambda r: r[3].update(emotion=""), r"empty 'emotion' on line\(s\) 5"),
        (lambda r: [x.update(path=f"gone/{i}.wav") for i, x in enumerate(r[:7])], r"7 aud.*gone/0.wav.* \(7 in all\)"),
        (lambda r: r[0].update(emotion="angry"), r"'angry': 1 utterance\(s\), 1 speaker\(s\)"),
        (lambda r: [x.update(emotion="angry") for x in r if "calm/cat" in x["path"]], r"'angry': 2 utt.*, 1 spe"),
        (lambda r: [x.update(speaker="ann", session="s1") for x in r], r"a single speaker \['ann'\]"),
        (lambda r: [x.update(emotion="calm") for x in r], r"only one emotion label \['calm'\]"),
        (lambda r: r[5].update(split="holdout"), r"split value\(s\) \['holdout'\] not allowed"),
        (lambda r: [x.update(split="train") for x in r if x["split"] == "valid"], r"split column has no valid rows"),
        (lambda r: r[0].update(split="test"), r"speaker\(s\) ann in both the test split and train/valid"),
        (lambda r: r.append({**r[0]}), r"audio file\(s\) listed twice"),
    ],
    ids="unknown_col missing_col empty_label missing_audio one_utt one_speaker_label single_speaker one_label"
    " bad_split empty_split leakage duplicate".split(),
)
def test_errors_name_the_problem(tmp_path: Path, tree: Path, edit, message: str) -> None:
    csv = _corpus_with(tmp_path, tree, edit)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        prepare_custom(csv, log=lambda s: None)
    assert str(csv) in str(err.value) and "\n" not in str(err.value)


def test_allow_partial_skips_missing_and_accepts_leakage(tmp_path: Path, tree: Path) -> None:
    def edit(rows: list[dict]) -> None:
        rows[0]["split"] = "test"
        rows.append({**rows[1], "path": "gone.wav"})

    warnings: list[str] = []
    m = prepare_custom(_corpus_with(tmp_path, tree, edit), allow_partial=True, log=warnings.append)
    assert len(m) == 24 and sum(w.startswith("WARNING") for w in warnings) == 2


def test_unreadable_and_misnamed_audio(tmp_path: Path, tree: Path) -> None:
    bad = tree / "calm" / "bob_0.wav"
    bad.write_bytes(b"not a wav file")
    with pytest.raises(ValueError, match=f"{bad}: unreadable audio"):
        prepare_custom(tree, log=lambda s: None)
    bad.unlink()
    tone(tree / "calm" / "nounderscore.wav")
    with pytest.raises(ValueError, match=r"nounderscore.wav: file name must be <speaker>_<anything>"):
        prepare_custom(tree, log=lambda s: None)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare_main(["custom", "--root", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "d")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.csv'}: corpus CSV or folder not found"
    assert prepare_main(["iemocap", "--root", str(tmp_path), "--out", str(tmp_path / "d"), "--protocols", "x"]) == 1


@pytest.mark.slow
def test_recipe_stages_0_to_3(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes" / "custom", recipes / "custom", ignore=shutil.ignore_patterns("data", "dump"))
    (recipes / "shared").symlink_to(ROOT / "recipes" / "shared")
    tree = build_tree(tmp_path, per_cell=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CORPUS_CSV": str(write_csv(tmp_path, csv_rows(tree)))}
    args = ["--stage", "0", "--stop_stage", "3", "--encoder", "whisper_tiny_en_trimmed", "--folds", "1"]
    train = "--number_of_epochs=1 --batch_size=8 --model_kwargs={rnn_hidden: 16,attention_hidden: 8}"
    p = subprocess.run(
        ["./run.sh", "--python", sys.executable, *args, "--train_args", train],
        cwd=recipes / "custom",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    overrides = {"number_of_epochs": 1, "batch_size": 8, "model_kwargs": {"rnn_hidden": 16, "attention_hidden": 8}}
    name = f"cta_rnn_whisper_tiny_en_trimmed_loso_speaker_{experiment_suffix(overrides)}"  # the overrides name it
    data, exp = recipes / "custom" / "data", recipes / "custom" / "exp" / name
    assert len(pd.read_csv(data / "manifest.csv")) == 36 and (data / "folds" / "given" / "fold1").is_dir()
    pred = pd.read_csv(exp / "fold1" / "predictions.csv")
    assert [c for c in pred.columns if c.startswith("prob_")] == [f"prob_{lab}" for lab in LABELS]
    assert (exp / "fold1" / "label_encoder.txt").is_file()
    res = json.loads((exp / "results.json").read_text())
    assert res["labels"] == LABELS and res["folds_scored"] == [1]
