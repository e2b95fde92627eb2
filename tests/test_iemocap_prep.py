"""IEMOCAP data prep on a full-count fixture tree laid out like IEMOCAP_full_release."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import build_iemocap

from cta_rnn.artifacts import read_manifest
from cta_rnn.corpora.expected_counts import IEMOCAP_SESSION_COUNTS, IEMOCAP_SPEAKER_COUNTS
from cta_rnn.corpora.iemocap import parse_label_file, parse_transcripts, parse_utt_id, prepare_iemocap
from cta_rnn.prepare import main

SMALL = {f"Ses{s:02d}{g}": {"neu": 2, "hap": 2, "ang": 1, "sad": 1} for s in range(1, 6) for g in "FM"}


def quiet(_msg: str) -> None:
    """Swallow log lines."""


@pytest.fixture(scope="module")
def full_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def manifest(full_root: Path) -> pd.DataFrame:
    return prepare_iemocap(full_root, log=quiet)


def test_full_counts_exact(manifest: pd.DataFrame) -> None:
    assert list(manifest.columns) == [
        "ID",
        "wav",
        "duration",
        "emotion",
        "speaker",
        "session",
        "gender",
        "dialog",
        "condition",
        "text",
        "arousal",
        "valence",
        "dominance",
    ]
    assert len(manifest) == 5531
    assert manifest["emotion"].value_counts().to_dict() == {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084}
    for spk, row in IEMOCAP_SPEAKER_COUNTS.items():
        assert manifest[manifest["speaker"] == spk]["emotion"].value_counts().to_dict() == row, spk
    for s, row in IEMOCAP_SESSION_COUNTS.items():
        assert manifest[manifest["session"] == s]["emotion"].value_counts().to_dict() == row, s
    assert sorted(manifest["session"].unique()) == [1, 2, 3, 4, 5]
    assert set(manifest["condition"]) == {"impro", "script"}
    assert manifest["ID"].is_unique and manifest["ID"].is_monotonic_increasing


def test_rows_are_consistent(manifest: pd.DataFrame) -> None:
    assert all(os.path.isabs(w) and os.path.isfile(w) for w in manifest["wav"])
    assert manifest["duration"].between(0.049, 0.051).all()
    assert (manifest["speaker"] == "Ses0" + manifest["session"].astype(str) + manifest["gender"]).all()
    assert (manifest["ID"].str.rsplit("_", n=1).str[0] == manifest["dialog"]).all()
    assert not manifest["ID"].str.endswith("_F999").any()  # decoys in Categorical/, Attribute/, ...
    odd = manifest[manifest["dialog"].isin(["Ses03M_impro05a", "Ses05M_script01_1b"])]
    assert set(odd["speaker"]) == {"Ses03F", "Ses03M", "Ses05F", "Ses05M"}
    assert (manifest["text"] != "").mean() > 0.8 and (manifest["text"] == "").any()
    assert (manifest.loc[manifest["dialog"].str.endswith("impro02"), "text"] == "").all()


@pytest.mark.parametrize(
    "utt, speaker",
    [
        ("Ses01F_impro01_M003", "Ses01M"),
        ("Ses03M_impro05a_F012", "Ses03F"),
        ("Ses05M_script01_1b_F003", "Ses05F"),
        ("Ses02F_script02_2_M040", "Ses02M"),
    ],
)
def test_speaker_from_last_token(utt: str, speaker: str) -> None:
    info = parse_utt_id(utt)
    assert info["speaker"] == speaker and info["gender"] == speaker[-1] and info["session"] == int(speaker[3:5])


@pytest.mark.parametrize("utt", ["Ses01F_impro01", "Ses1F_impro01_F000", "Ses01F_impro01_X000"])
def test_bad_utt_ids(utt: str) -> None:
    with pytest.raises(ValueError, match="not an IEMOCAP utterance id"):
        parse_utt_id(utt)


def test_label_and_transcript_parsers(tmp_path: Path) -> None:
    lab = tmp_path / "Ses01F_impro01.txt"
    lab.write_bytes(
        b"% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        b"[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
        b"C-E2:\tNeutral;\t(caf\xe9)\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
        b"[10.01 - 11.3925]\tSes01F_impro01_M000\texc\t[3.5, 3.0, 3.0]\n"
    )
    recs = parse_label_file(lab)
    assert [(r.utt, r.code, r.start) for r in recs] == [
        ("Ses01F_impro01_F000", "neu", 6.2901),
        ("Ses01F_impro01_M000", "exc", 10.01),
    ]
    tr = tmp_path / "t.txt"
    tr.write_text(
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\nM: [BREATHING]\nSes01F_impro01_MXX0 [0-1]: [LAUGHTER]\n"
    )
    assert parse_transcripts(tr)["Ses01F_impro01_F000"] == "Excuse me."


def test_cli_writes_manifest_and_folds(full_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["iemocap", "--root", str(full_root.parent), "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "class x session table" in out and "5531" in out
    m = read_manifest(tmp_path / "data" / "manifest.csv")
    assert len(m) == 5531
    for proto, n in (("loso_session", 5), ("loso_speaker", 10)):
        base = tmp_path / "data" / "folds" / proto
        assert (base / "folds.json").is_file()
        for k in range(1, n + 1):
            sizes = [len(pd.read_csv(base / f"fold{k}" / f"{s}.csv")) for s in ("train", "valid", "test")]
            assert sum(sizes) == 5531 and min(sizes) > 0


def test_condition_subset(full_root: Path, manifest: pd.DataFrame) -> None:
    impro = prepare_iemocap(full_root, conditions=["impro"], log=quiet)
    assert set(impro["condition"]) == {"impro"}
    assert len(impro) == (manifest["condition"] == "impro").sum()
    with pytest.raises(ValueError, match="conditions"):
        prepare_iemocap(full_root, conditions=["T"], log=quiet)


def overlay(src: Path, dst: Path) -> Path:
    """A cheap copy of a fixture tree: label files copied (to be edited), everything else symlinked."""
    for sess in src.iterdir():
        (dst / sess.name / "dialog").mkdir(parents=True)
        (dst / sess.name / "sentences").symlink_to(sess / "sentences")
        (dst / sess.name / "dialog" / "transcriptions").symlink_to(sess / "dialog" / "transcriptions")
        shutil.copytree(sess / "dialog" / "EmoEvaluation", dst / sess.name / "dialog" / "EmoEvaluation")
    return dst


def test_count_mismatch_names_cells(full_root: Path, manifest: pd.DataFrame, tmp_path: Path) -> None:
    root = overlay(full_root, tmp_path / "IEMOCAP_full_release")
    gone = manifest[(manifest["speaker"] == "Ses03F") & (manifest["emotion"] == "sad")]["ID"].head(5)
    for dialog in {u.rsplit("_", 1)[0] for u in gone}:  # relabel 5 sad utterances of Ses03F as fru
        lab = root / "Session3" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        text = lab.read_text(encoding="latin-1")
        for u in gone:
            text = text.replace(f"\t{u}\tsad\t", f"\t{u}\tfru\t")
        lab.write_text(text, encoding="latin-1")
    with pytest.raises(ValueError) as err:
        prepare_iemocap(root, log=quiet)
    assert "session 3 / sad: found 300, expected 305" in str(err.value)
    assert "speaker Ses03F / sad: found 167, expected 172" in str(err.value)
    assert main(["iemocap", "--root", str(root), "--out", str(tmp_path / "data")]) == 1
    assert not (tmp_path / "data").exists()
    assert len(prepare_iemocap(root, allow_partial=True, log=quiet)) == 5526


def test_missing_root_and_sessions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match="root not found"):
        prepare_iemocap(tmp_path / "nope", log=quiet)
    root = build_iemocap(tmp_path, SMALL, sessions=(1, 2, 4), extras_per_dialog=1)
    assert main(["iemocap", "--root", str(root), "--out", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing Session3, Session5" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "data").exists()
    df = prepare_iemocap(root, allow_partial=True, log=quiet)
    assert sorted(df["session"].unique()) == [1, 2, 4] and len(df) == 6 * 6


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path, SMALL, extras_per_dialog=1)
    lab = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    lines = lab.read_text().splitlines()
    lines.insert(4, "[6.2901 - 8.2357]\tSes02F_impro01_F077\tneu")
    lab.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"Ses02F_impro01\.txt:5: malformed label line"):
        prepare_iemocap(root, allow_partial=True, log=quiet)
    lines[4] = "[6.2901 - 8.2357]\tSes02F_impro01_F077\tjoy\t[2.5, 2.5, 2.5]"
    lab.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"Ses02F_impro01\.txt:5: unknown emotion code 'joy'"):
        prepare_iemocap(root, allow_partial=True, log=quiet)


def test_missing_wav(tmp_path: Path) -> None:
    root = build_iemocap(tmp_path, SMALL, extras_per_dialog=0)
    df = prepare_iemocap(root, allow_partial=True, log=quiet)
    gone = Path(df["wav"].iloc[7])
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=gone.name):
        prepare_iemocap(root, log=quiet)
    assert len(prepare_iemocap(root, allow_partial=True, log=quiet)) == len(df) - 1


def test_duplicate_label_names_both_places(tmp_path: Path) -> None:
    counts = {f"Ses01{g}": {e: 2 for e in ("neu", "hap", "ang", "sad")} for g in "FM"}
    root = build_iemocap(tmp_path, counts, sessions=(1,), extras_per_dialog=0)
    files = sorted(f for f in (root / "Session1" / "dialog" / "EmoEvaluation").glob("Ses*.txt"))
    lines = [ln for f in files for ln in f.read_text(encoding="latin-1").splitlines() if ln.startswith("[")]
    line = lines[0]
    other = next(f for f in files if line not in f.read_text(encoding="latin-1"))
    with open(other, "a", encoding="latin-1") as f:
        f.write("\n" + line + "\n")
    with pytest.raises(ValueError, match=r"labelled twice: .*\.txt:\d+ and .*\.txt:\d+"):
        prepare_iemocap(root, allow_partial=True, log=lambda *_: None)
