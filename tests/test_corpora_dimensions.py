"""Stage 0 writes the dimensional ratings (arousal, valence, dominance) of every corpus into the manifest and folds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import build_iemocap_from_labels, build_msp_from_evaluation, wav_bytes

from cta_rnn import DIMENSIONS, EMOTIONS
from cta_rnn.corpora import mini
from cta_rnn.corpora.custom import prepare_custom
from cta_rnn.corpora.iemocap import parse_label_file, prepare_iemocap
from cta_rnn.corpora.msp_improv import parse_evaluation
from cta_rnn.prepare import prepare

BASE = ["ID", "wav", "duration", "emotion", "speaker", "session", "gender"]


def read_str(path: Path) -> pd.DataFrame:
    """A written CSV as strings, empty cells kept empty (what the next stage reads)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("ID")


def dims_of(df: pd.DataFrame, uid: str) -> tuple[float, float, float]:
    """(arousal, valence, dominance) of one manifest row."""
    row = df.set_index("ID").loc[uid]
    return float(row["arousal"]), float(row["valence"]), float(row["dominance"])


# ----------------------------------------------------------------------------------------------- IEMOCAP
IEMOCAP_LABELS = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 3.0000, 3.5000]\n"
    "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\nA-F1:\tval 2; act 3; dom  3;\t()\n\n"
    "[10.0100 - 11.3925]\tSes01F_impro01_M000\tang\t[1.5000, 4.5000, 4.0000]\n\n"
    "[12.0 - 13.5]  Ses01F_impro01_F001   exc   [ 4.0000,3.3333 ,  2.0000 ]\n\n"
    "[14.0000 - 15.0000]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 2.5000]\n\n"
    "[16.0000 - 17.0000]\tSes01F_impro01_F002\tsad\t[2.0, 1.5, 1.0]\n"
)
IEMOCAP_WANT = {  # (arousal = middle, valence = first, dominance = third)
    "Ses01F_impro01_F000": (3.0, 2.5, 3.5),
    "Ses01F_impro01_M000": (4.5, 1.5, 4.0),
    "Ses01F_impro01_F001": (3.3333, 4.0, 2.0),
    "Ses01F_impro01_F002": (1.5, 2.0, 1.0),
}


def test_iemocap_label_lines(tmp_path: Path) -> None:
    root = build_iemocap_from_labels(tmp_path, "Ses01F_impro01", IEMOCAP_LABELS)
    recs = parse_label_file(root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt")
    assert [r.utt for r in recs] == [*list(IEMOCAP_WANT)[:3], "Ses01F_impro01_M001", "Ses01F_impro01_F002"]
    assert (recs[3].arousal, recs[3].valence, recs[3].dominance) == (3.5, 2.0, 2.5)  # dropped code, still parsed
    logged: list[str] = []
    df = prepare_iemocap(root, allow_partial=True, log=logged.append)
    assert list(df.columns) == [*BASE, "dialog", "condition", "text", *DIMENSIONS]
    assert sorted(df["ID"]) == sorted(IEMOCAP_WANT)  # fru dropped
    for uid, want in IEMOCAP_WANT.items():
        assert dims_of(df, uid) == want, uid
    assert "IEMOCAP: dimension ratings missing: arousal 0, valence 0, dominance 0 of 4 utterances" in logged


def test_iemocap_manifest_csv_exact(tmp_path: Path) -> None:
    root = build_iemocap_from_labels(tmp_path, "Ses01F_impro01", IEMOCAP_LABELS)
    prepare("iemocap", root, tmp_path / "data", allow_partial=True, protocols=[], log=lambda _: None)
    m = read_str(tmp_path / "data" / "manifest.csv")
    assert m.loc["Ses01F_impro01_F001", list(DIMENSIONS)].tolist() == ["3.3333", "4.0", "2.0"]
    assert m.loc["Ses01F_impro01_M000", list(DIMENSIONS)].tolist() == ["4.5", "1.5", "4.0"]


def test_iemocap_line_without_dominance_is_malformed(tmp_path: Path) -> None:
    text = IEMOCAP_LABELS + "[18.0 - 19.0]\tSes01F_impro01_F003\tneu\t[2.5000, 3.0000]\n"
    root = build_iemocap_from_labels(tmp_path, "Ses01F_impro01", text)
    with pytest.raises(ValueError, match=r"Ses01F_impro01\.txt:15: malformed label line"):
        prepare_iemocap(root, allow_partial=True, log=lambda _: None)


# ----------------------------------------------------------------------------------------------- MSP-IMPROV
MSP_EVALUATION = (
    "UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:2.800000; V:3.000000; D:2.600000; N:3.000000;\n"
    "rater-01; Angry; Angry; A:5.000000; V:1.000000; D:NaN; N:3.000000;\n"
    "F, 1.1, A, 2.0, NaN\n\n"
    "UTD-IMPROV-S01H-M01-T-MF01.avi; H; A: 3.4 ; V :4.2;  D:NaN ; N:NaN\n"
    "UTD-IMPROV-S02S-F02-P-FM02.avi;  S;  A:1.666667;  D:NaN;  N:2.5;\n"
    "UTD-IMPROV-S02N-M01-R-MF02.avi; N; A:NaN; V:3.0; D:3.25\n"
    "UTD-IMPROV-S03A-F01-S-FM03.avi; X; A:1.0; V:1.0; D:1.0; N:1.0;\n"
)
NAN = math.nan
MSP_WANT = {
    "MSP-IMPROV-S01A-F01-S-FM01": (2.8, 3.0, 2.6),
    "MSP-IMPROV-S01H-M01-T-MF01": (3.4, 4.2, NAN),  # stray spaces, no trailing ';'
    "MSP-IMPROV-S02S-F02-P-FM02": (1.666667, NAN, NAN),  # V missing; naturalness not taken for it
    "MSP-IMPROV-S02N-M01-R-MF02": (NAN, 3.0, 3.25),
}


def same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal tuples, NaN equal to NaN."""
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_msp_evaluation_ratings(tmp_path: Path) -> None:
    root = build_msp_from_evaluation(tmp_path, MSP_EVALUATION)
    got = parse_evaluation(root / "Evaluation.txt", log=lambda _: None)
    assert {uid: c.label for uid, c in got.items()} == {
        "MSP-IMPROV-S01A-F01-S-FM01": "A",
        "MSP-IMPROV-S01H-M01-T-MF01": "H",
        "MSP-IMPROV-S02S-F02-P-FM02": "S",
        "MSP-IMPROV-S02N-M01-R-MF02": "N",
        "MSP-IMPROV-S03A-F01-S-FM03": "X",
    }
    for uid, want in MSP_WANT.items():
        c = got[uid]
        assert same((c.arousal, c.valence, c.dominance), want), uid


def test_msp_manifest_folds_and_log(tmp_path: Path) -> None:
    root = build_msp_from_evaluation(tmp_path, MSP_EVALUATION)
    logged: list[str] = []
    out = tmp_path / "data"
    df = prepare("msp_improv", root, out, allow_partial=True, protocols=["loso_speaker"], log=logged.append)
    assert list(df.columns) == [*BASE, "dialog", "condition", "text", *DIMENSIONS]
    assert sorted(df["ID"]) == sorted(MSP_WANT)  # X dropped
    for uid, want in MSP_WANT.items():
        assert same(dims_of(df, uid), want), uid
    assert "MSP-IMPROV: dimension ratings missing: arousal 1, valence 1, dominance 2 of 4 utterances" in logged
    m = read_str(out / "manifest.csv")
    assert m.loc["MSP-IMPROV-S02S-F02-P-FM02", list(DIMENSIONS)].tolist() == ["1.666667", "", ""]
    assert m.loc["MSP-IMPROV-S01A-F01-S-FM01", list(DIMENSIONS)].tolist() == ["2.8", "3.0", "2.6"]
    folds = sorted((out / "folds" / "loso_speaker").glob("fold[0-9]*"))
    assert len(folds) == 3  # F01, M01, F02
    for fold in folds:
        for split in ("train", "valid", "test"):
            part = read_str(fold / f"{split}.csv")
            assert list(part.columns)[-3:] == list(DIMENSIONS)
            pd.testing.assert_frame_equal(part, m.loc[part.index])


@pytest.mark.parametrize(
    "line, where",
    [
        ("UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:abc; V:3.0; D:2.6; N:3.0;", "rating A \\(arousal\\) must be a number"),
        ("UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:2.8; V:3.0 4.0; D:2.6;", "rating V \\(valence\\) must be a number"),
        ("UTD-IMPROV-S01A-F01-S-FM01.avi; A; A:2.8; V:3.0; D:inf;", "rating D \\(dominance\\) must be a number"),
    ],
)
def test_msp_bad_rating_names_line(tmp_path: Path, line: str, where: str) -> None:
    ev = tmp_path / "Evaluation.txt"
    ev.write_text(f"rater-01; Angry; Angry; A:abc;\n{line}\n")
    with pytest.raises(ValueError, match=rf"Evaluation\.txt:2: {where} or NaN, got '"):
        parse_evaluation(ev)


# ----------------------------------------------------------------------------------------------- custom
CUSTOM_CSV = (
    "path,emotion,speaker,arousal,valence,dominance\n"
    "a/ann_0.wav,calm,ann,2.5,3,\n"
    "a/ann_1.wav,excited,ann,4.25,NaN,1.5\n"
    "a/bob_0.wav,calm,bob,, ,2\n"
    "a/bob_1.wav,excited,bob,-0.5,0.75,10\n"
    "a/cat_0.wav,calm,cat,1,2,3\n"
    "a/cat_1.wav,excited,cat,3.3333,4,5\n"
)


def custom_corpus(tmp_path: Path, text: str = CUSTOM_CSV) -> Path:
    """``corpus.csv`` with ``text`` and a wav for each of its rows."""
    (tmp_path / "a").mkdir(exist_ok=True)
    for name in ("ann_0", "ann_1", "bob_0", "bob_1", "cat_0", "cat_1"):
        (tmp_path / "a" / f"{name}.wav").write_bytes(wav_bytes())
    csv = tmp_path / "corpus.csv"
    csv.write_text(text)
    return csv


def test_custom_dimensions_to_manifest_and_folds(tmp_path: Path) -> None:
    logged: list[str] = []
    out = tmp_path / "data"
    df = prepare("custom", custom_corpus(tmp_path), out, protocols=["loso_speaker"], log=logged.append)
    assert list(df.columns) == [*BASE, "text", "condition", *DIMENSIONS]
    assert "custom: dimension ratings missing: arousal 1, valence 2, dominance 1 of 6 utterances" in logged
    m = read_str(out / "manifest.csv")
    assert m[list(DIMENSIONS)].values.tolist() == [  # any finite scale, as given; empty / NaN -> empty
        ["2.5", "3.0", ""],
        ["4.25", "", "1.5"],
        ["", "", "2.0"],
        ["-0.5", "0.75", "10.0"],
        ["1.0", "2.0", "3.0"],
        ["3.3333", "4.0", "5.0"],
    ]
    for split in ("train", "valid", "test"):
        part = read_str(out / "folds" / "loso_speaker" / "fold1" / f"{split}.csv")
        pd.testing.assert_frame_equal(part, m.loc[part.index])


def test_custom_some_or_no_dimensions(tmp_path: Path) -> None:
    text = "\n".join(",".join(line.split(",")[:4]) for line in CUSTOM_CSV.splitlines()) + "\n"
    df = prepare_custom(custom_corpus(tmp_path, text), log=lambda _: None)
    assert list(df.columns)[-1] == "arousal" and "valence" not in df and "dominance" not in df
    folder = tmp_path / "tree"
    for emo in ("calm", "excited"):
        for spk in ("ann", "bob", "cat"):
            (folder / emo).mkdir(parents=True, exist_ok=True)
            (folder / emo / f"{spk}_0.wav").write_bytes(wav_bytes())
    assert not set(DIMENSIONS) & set(prepare_custom(folder, log=lambda _: None).columns)


@pytest.mark.parametrize("bad, line", [("abc", 4), ("inf", 7)])
def test_custom_bad_dimension_names_line(tmp_path: Path, bad: str, line: int) -> None:
    rows = CUSTOM_CSV.splitlines()
    cells = rows[line - 1].split(",")
    cells[4] = bad
    rows[line - 1] = ",".join(cells)
    csv = custom_corpus(tmp_path, "\n".join(rows) + "\n")
    with pytest.raises(
        ValueError, match=rf"corpus\.csv: valence must be a number or empty, got '{bad}' \(line\(s\) {line}\)"
    ):
        prepare_custom(csv, log=lambda _: None)


# ----------------------------------------------------------------------------------------------- mini
@pytest.fixture(scope="module")
def mini_jobs() -> pd.DataFrame:
    jobs = mini.plan(Path("/nonexistent"), 11, 10, mini.DEFAULT_JITTER, 2021, 16000)
    return pd.DataFrame([{**j["params"], **{k: j[k] for k in ("emotion", "speaker", *DIMENSIONS)}} for j in jobs])


def test_mini_ratings_deterministic_and_in_range(mini_jobs: pd.DataFrame) -> None:
    assert len(mini_jobs) == 10 * 11 * 4
    again = mini.plan(Path("/elsewhere"), 11, 10, mini.DEFAULT_JITTER, 2021, 16000)
    assert [[j[d] for d in DIMENSIONS] for j in again] == mini_jobs[list(DIMENSIONS)].values.tolist()
    for d in DIMENSIONS:
        assert mini_jobs[d].between(1, 5).all() and (mini_jobs[d].round(2) == mini_jobs[d]).all()
    p = mini.draw_prosody("hap", 0.75, 3, 1, 2)
    assert mini.draw_dimensions(p, "hap", 3, 1, 2) == mini.draw_dimensions(dict(p), "hap", 3, 1, 2)
    assert mini.draw_dimensions(p, "hap", 3, 1, 2) != mini.draw_dimensions(p, "hap", 4, 1, 2)
    assert all(set(j["params"]).isdisjoint(DIMENSIONS) for j in again)  # wav JSONs unchanged: wavs reused


def test_mini_arousal_follows_rendered_prosody(mini_jobs: pd.DataFrame) -> None:
    df = mini_jobs
    assert 0.7 <= df["arousal"].std() <= 1.1
    assert df["arousal"].corr(df["rate"], method="spearman") > 0.8
    assert df["arousal"].corr(df["amplitude"], method="spearman") > 0.8
    for emo, g in df.groupby("emotion"):  # learnable within a class too
        assert g["arousal"].corr(g["rate"], method="spearman") > 0.3, emo
    a = df.groupby("emotion")["arousal"].mean()
    assert a["sad"] < a["neu"] < a["hap"] < a["ang"]
    v = df.groupby("emotion")["valence"].mean()
    assert v["ang"] < v["neu"] < v["hap"] and v["sad"] < v["neu"]
    assert v["hap"] == pytest.approx(mini.VALENCE_MEANS["hap"], abs=0.15)
    assert df["dominance"].corr(df["amplitude"], method="spearman") > 0.7


def test_mini_manifest_has_ratings_and_reuses_wavs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake_render(job: dict) -> float:
        """Write a tiny wav and the JSON of its rendering parameters, like :func:`mini.render`."""
        made.append(job["ID"])
        wav = Path(job["wav"])
        wav.parent.mkdir(parents=True, exist_ok=True)
        wav.write_bytes(wav_bytes())
        wav.with_suffix(".json").write_text(json.dumps(job["params"]))
        return 0.05

    monkeypatch.setattr(mini, "render", fake_render)
    df = mini.make_mini_corpus(tmp_path, n_sentences=2, speakers=2, jitter=1.0, seed=7)
    assert list(df.columns)[-3:] == list(DIMENSIONS) and len(made) == len(df) == 2 * 2 * len(EMOTIONS)
    jobs = {j["ID"]: j for j in mini.plan(tmp_path.resolve(), 2, 2, 1.0, 7, 16000)}
    assert all(dims_of(df, uid) == tuple(j[d] for d in DIMENSIONS) for uid, j in jobs.items())
    made.clear()
    pd.testing.assert_frame_equal(mini.make_mini_corpus(tmp_path, n_sentences=2, speakers=2, jitter=1.0, seed=7), df)
    assert made == []
