"""MSP-IMPROV data prep on full-count fixture trees (with and without Audio/, both label-file spellings)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from corpus_fixtures import build_msp_improv, msp_cells_small

from cta_rnn.artifacts import read_manifest
from cta_rnn.corpora.expected_counts import MSP_IMPROV_CONDITION_COUNTS, MSP_IMPROV_SESSION_COUNTS
from cta_rnn.corpora.msp_improv import parse_evaluation, parse_utterance_id, prepare_msp_improv
from cta_rnn.prepare import main

SPEAKERS = [f"{g}{s:02d}" for g in "FM" for s in range(1, 7)]


def quiet(_msg: str) -> None:
    """Swallow log lines."""


@pytest.fixture(scope="module")
def full_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_msp_improv(tmp_path_factory.mktemp("msp"))


@pytest.fixture(scope="module")
def manifest(full_root: Path) -> pd.DataFrame:
    return prepare_msp_improv(full_root, log=quiet)


def check_full(df: pd.DataFrame) -> None:
    """Exact published counts per session and per condition, ids, speakers and sessions."""
    assert len(df) == 7798
    assert df["emotion"].value_counts().to_dict() == {"neu": 3477, "hap": 2644, "ang": 792, "sad": 885}
    for s, row in MSP_IMPROV_SESSION_COUNTS.items():
        assert df[df["session"] == s]["emotion"].value_counts().to_dict() == row, s
    for c, row in MSP_IMPROV_CONDITION_COUNTS.items():
        assert df[df["condition"] == c]["emotion"].value_counts().to_dict() == row, c
    assert sorted(df["speaker"].unique()) == sorted(SPEAKERS)
    assert (df["speaker"].str[1:].astype(int) == df["session"]).all()
    assert (df["speaker"].str[0] == df["gender"]).all()
    assert df["ID"].str.match(r"^MSP-IMPROV-S\d\d[AHSN]-[FM]0[1-6]-[TRSP]-[FM]{2}\d\d$").all()
    assert df["ID"].is_unique


def test_full_counts_exact(manifest: pd.DataFrame) -> None:
    check_full(manifest)
    assert all(os.path.isabs(w) and os.path.isfile(w) and "/Audio/session" in w for w in manifest["wav"])
    assert manifest["duration"].between(0.049, 0.051).all()
    rates = {sf.info(w).samplerate for w in manifest["wav"].iloc[:20]}
    assert rates == {16000, 48000}
    assert 0 < (manifest["text"] != "").sum() < len(manifest)


def test_no_audio_level_and_misspelt_labels(tmp_path: Path) -> None:
    root = build_msp_improv(tmp_path, cells=msp_cells_small(2), label_name="Evalution.txt", audio_level=False)
    df = prepare_msp_improv(root, allow_partial=True, log=quiet)
    assert len(df) == 6 * 4 * 4 * 2 and sorted(df["speaker"].unique()) == sorted(SPEAKERS)
    assert (df.groupby(["session", "condition", "emotion"]).size() == 2).all()
    assert not any("/Audio/" in w for w in df["wav"]) and all(os.path.isfile(w) for w in df["wav"])


def test_condition_subsets(full_root: Path) -> None:
    df = prepare_msp_improv(full_root, conditions=["S", "P"], log=quiet)
    assert set(df["condition"]) == {"S", "P"} and len(df) == 3940 + 2640
    assert len(prepare_msp_improv(full_root, conditions="T", log=quiet)) == 640
    with pytest.raises(ValueError, match="conditions"):
        prepare_msp_improv(full_root, conditions=["impro"], log=quiet)


@pytest.mark.parametrize(
    "name, fields",
    [
        ("MSP-IMPROV-S01A-F01-S-FM01", ("F01", 1, "F", "S", 1, "A", "FM", 1)),
        ("UTD-IMPROV-S12H-M06-P-MF103.avi", ("M06", 6, "M", "P", 12, "H", "MF", 103)),
        ("S20N-M03-R-MM07", ("M03", 3, "M", "R", 20, "N", "MM", 7)),
    ],
)
def test_id_fields(name: str, fields: tuple) -> None:
    info = parse_utterance_id(name)
    keys = ("speaker", "session", "gender", "condition", "sentence", "target", "dyad", "turn")
    assert tuple(info[k] for k in keys) == fields
    assert info["ID"].startswith("MSP-IMPROV-S")


@pytest.mark.parametrize("name", ["S01A-F01-Q-FM01", "S1A-F01-S-FM01", "S01A-X01-S-FM01", "S01A-F01-S"])
def test_bad_ids(name: str) -> None:
    with pytest.raises(ValueError, match="not an MSP-IMPROV id"):
        parse_utterance_id(name)


def test_evaluation_parser(tmp_path: Path) -> None:
    ev = tmp_path / "Evaluation.txt"
    ev.write_text(
        "UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.000000; V:3.500000; D:3.000000 ; N:3.000000;\n"
        "rater-01; Neutral; Neutral,Happy; A:3.000000; V:3.000000; D:NaN; N:3.000000;\n"
        "F, 1.1, N, 2.0\n\n"
        "UTD-IMPROV-S02H-M01-P-MF02.avi;  X; A:NaN; V:NaN; D:NaN ; N:NaN;\r\n"
        "UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0; V:3.5; D:3.0 ; N:3.0;\n"
        "UTD-IMPROV-S01A-F01-S-FM01.avi; H; A:3.0; V:3.5; D:3.0 ; N:3.0;\n"
    )
    logged: list[str] = []
    assert {uid: rec.label for uid, rec in parse_evaluation(ev, logged.append).items()} == {
        "MSP-IMPROV-S01A-F01-S-FM01": "N",
        "MSP-IMPROV-S02H-M01-P-MF02": "X",
    }
    assert len(logged) == 1 and "Evaluation.txt:7: MSP-IMPROV-S01A-F01-S-FM01 labelled N earlier and H" in logged[0]
    ev.write_text("UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.0;\n\nUTD-IMPROV-S01A-F01-Z-FM02.avi; H; A:3.0;\n")
    with pytest.raises(ValueError, match=r"Evaluation\.txt:3: .*not an MSP-IMPROV id"):
        parse_evaluation(ev)
    ev.write_text("x\nUTD-IMPROV-S01A-F01-S-FM01.avi; Q; A:3.0;\n")
    with pytest.raises(ValueError, match=r"Evaluation\.txt:2: unknown consensus label 'Q'"):
        parse_evaluation(ev)
    ev.write_text("UTD-IMPROV-S01A-F01-S-FM01.avi N A:3.0\n")
    with pytest.raises(ValueError, match=r"Evaluation\.txt:1: malformed consensus line"):
        parse_evaluation(ev)


def test_count_mismatch_names_cells(full_root: Path, manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "MSP-IMPROV"
    root.mkdir()
    (root / "Audio").symlink_to(full_root / "Audio")
    row = manifest[(manifest["session"] == 6) & (manifest["emotion"] == "sad")].iloc[0]
    uid = row["ID"].replace("MSP-", "UTD-", 1)
    text = (full_root / "Evaluation.txt").read_text()
    text, n = re.subn(rf"({re.escape(uid)}\.avi;\s*)S;", r"\1X;", text)
    assert n == 1
    (root / "Evaluation.txt").write_text(text)
    with pytest.raises(ValueError) as err:
        prepare_msp_improv(root, log=quiet)
    msg = str(err.value)
    assert "session 6 / sad: found 265, expected 266" in msg
    want = MSP_IMPROV_CONDITION_COUNTS[row["condition"]]["sad"]
    assert f"condition {row['condition']} / sad: found {want - 1}, expected {want}" in msg
    assert len(prepare_msp_improv(root, allow_partial=True, log=quiet)) == 7797


def test_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match="root not found"):
        prepare_msp_improv(tmp_path / "nope", log=quiet)
    root = build_msp_improv(tmp_path, cells=msp_cells_small(), extras={(1, "S", "O"): 1, (2, "P", "X"): 2})
    df = prepare_msp_improv(root, allow_partial=True, log=quiet)
    assert len(df) == 6 * 4 * 4 and sorted(df["speaker"].unique()) == sorted(SPEAKERS)
    gone = Path(df["wav"].iloc[5])
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=gone.stem):
        prepare_msp_improv(root, log=quiet)
    assert len(prepare_msp_improv(root, allow_partial=True, log=quiet)) == len(df) - 1
    (root / "Evaluation.txt").unlink()
    assert main(["msp_improv", "--root", str(root), "--out", str(tmp_path / "data"), "--allow_partial"]) == 1
    assert "Evaluation.txt or Evalution.txt" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_cli_subset_and_protocol(full_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    args = [
        "msp_improv",
        "--root",
        str(full_root),
        "--out",
        str(out),
        "--conditions",
        "S,P",
        "--protocols",
        "loso_speaker",
    ]
    assert main(args) == 0
    m = read_manifest(out / "manifest.csv")
    assert len(m) == 6580 and set(m["condition"]) == {"S", "P"}
    assert sorted(p.name for p in (out / "folds" / "loso_speaker").iterdir()) == sorted(
        [f"fold{k}" for k in range(1, 13)] + ["folds.json"]
    )
    assert not (out / "folds" / "loso_session").exists()
