"""Fold protocols: fold counts, sizes, the validation-speaker rules and the leakage checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cta_rnn.artifacts import read_manifest
from cta_rnn.corpora.expected_counts import IEMOCAP_SPEAKER_COUNTS, MSP_IMPROV_SESSION_COUNTS
from cta_rnn.corpora.folds import check_no_leakage, make_folds, write_folds
from cta_rnn.io_utils import atomic_to_csv


def synthetic(speakers: dict[str, tuple[object, dict[str, int]]]) -> pd.DataFrame:
    """A manifest with ``speaker -> (session, {emotion: n})`` rows (no audio needed)."""
    rows = [
        {
            "ID": f"{spk}_{emo}_{i:04d}",
            "wav": f"/x/{spk}_{emo}_{i}.wav",
            "duration": 1.0,
            "emotion": emo,
            "speaker": spk,
            "session": sess,
            "gender": spk[-1],
        }
        for spk, (sess, counts) in speakers.items()
        for emo, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def iemocap_like() -> pd.DataFrame:
    return synthetic({spk: (int(spk[3:5]), c) for spk, c in IEMOCAP_SPEAKER_COUNTS.items()})


def test_iemocap_loso_session() -> None:
    m = iemocap_like()
    folds = make_folds(m, "loso_session")
    assert list(folds) == [1, 2, 3, 4, 5]
    for k, sp in folds.items():
        assert set(sp["test"]["session"]) == {k}
        assert set(sp["valid"]["session"]) == {5 if k == 1 else k - 1}  # the session before, cyclic
        assert set(sp["train"]["session"]) == {1, 2, 3, 4, 5} - {k, 5 if k == 1 else k - 1}
        assert sum(len(d) for d in sp.values()) == 5531
    assert [len(folds[k]["test"]) for k in folds] == [1085, 1023, 1151, 1031, 1241]


def test_iemocap_loso_speaker() -> None:
    folds = make_folds(iemocap_like(), "loso_speaker")
    assert len(folds) == 10
    for k, spk in enumerate(sorted(IEMOCAP_SPEAKER_COUNTS), 1):
        sp = folds[k]
        assert set(sp["test"]["speaker"]) == {spk}
        assert set(sp["valid"]["speaker"]) == {spk[:-1] + ("M" if spk[-1] == "F" else "F")}
        assert len(sp["test"]) == sum(IEMOCAP_SPEAKER_COUNTS[spk].values())
        assert len(sp["train"]["speaker"].unique()) == 8


def test_msp_improv_like_fold_numbers() -> None:
    spk = {
        f"{g}{s:02d}": (s, {e: n // 2 for e, n in c.items()})
        for s, c in MSP_IMPROV_SESSION_COUNTS.items()
        for g in "FM"
    }
    m = synthetic(spk)
    assert len(make_folds(m, "loso_session")) == 6
    folds = make_folds(m, "loso_speaker")
    assert len(folds) == 12
    assert [min(folds[k]["test"]["speaker"]) for k in (1, 2, 12)] == ["F01", "M01", "M06"]


def test_custom_sessions_with_one_or_three_speakers() -> None:
    c = {"neu": 2, "sad": 1}
    m = synthetic({"a": ("s1", c), "b": ("s1", c), "c": ("s1", c), "d": ("s2", c), "e": ("s3", c), "f": ("s3", c)})
    folds = make_folds(m, "loso_speaker")
    valid = {k: sorted(set(sp["valid"]["speaker"])) for k, sp in folds.items()}
    test = {k: sorted(set(sp["test"]["speaker"])) for k, sp in folds.items()}
    assert test == {1: ["a"], 2: ["b"], 3: ["c"], 4: ["d"], 5: ["e"], 6: ["f"]}
    assert valid == {1: ["b", "c"], 2: ["a", "c"], 3: ["a", "b"], 4: ["e"], 5: ["f"], 6: ["e"]}
    assert make_folds(m, "loso_session", folds=[2])[2]["valid"]["speaker"].unique().tolist() == ["a", "b", "c"]


def test_subset_and_errors() -> None:
    m = iemocap_like()
    assert list(make_folds(m, "loso_speaker", folds=[3, 1])) == [1, 3]
    with pytest.raises(ValueError, match="out of range"):
        make_folds(m, "loso_session", folds=[6])
    with pytest.raises(ValueError, match="unknown protocol"):
        make_folds(m, "kfold")
    with pytest.raises(ValueError, match="at least 3 sessions"):
        make_folds(synthetic({"a": (1, {"neu": 1}), "b": (2, {"neu": 1})}), "loso_session")
    leaky = m.copy()
    leaky.loc[0, "session"] = 2  # Ses01F also in session 2
    with pytest.raises(ValueError, match="more than one session"):
        make_folds(leaky, "loso_session")


def test_check_no_leakage_raises() -> None:
    m = iemocap_like()
    sp = make_folds(m, "loso_speaker", folds=[1])[1]
    bad = dict(sp, train=pd.concat([sp["train"], sp["test"].head(1)]))
    with pytest.raises(ValueError, match="in both train and test"):
        check_no_leakage(bad, 1)
    with pytest.raises(ValueError, match="rows"):
        check_no_leakage(dict(sp, valid=sp["valid"].head(3)), 1, len(m))


def test_write_folds_round_trip(tmp_path: Path) -> None:
    m = iemocap_like()
    atomic_to_csv(m, tmp_path / "manifest.csv")
    m = read_manifest(tmp_path / "manifest.csv")  # sessions come back as strings: same folds
    (tmp_path / "folds" / "loso_session" / "fold9").mkdir(parents=True)  # stale, from an earlier run
    summary = write_folds(m, "loso_session", tmp_path, log=lambda _: None)
    base = tmp_path / "folds" / "loso_session"
    assert json.loads((base / "folds.json").read_text()) == summary
    assert sorted(p.name for p in base.iterdir()) == ["fold1", "fold2", "fold3", "fold4", "fold5", "folds.json"]
    assert summary["n_folds"] == 5 and summary["folds"]["3"]["test"]["sessions"] == ["3"]
    assert summary["folds"]["1"]["valid"]["speakers"] == ["Ses05F", "Ses05M"]
    for k in range(1, 6):
        parts = [pd.read_csv(base / f"fold{k}" / f"{s}.csv") for s in ("train", "valid", "test")]
        assert sum(len(p) for p in parts) == 5531 and list(parts[0].columns) == list(m.columns)
