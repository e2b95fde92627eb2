"""Stage 3 and 4 on dimensional predictions (arousal / valence): CCC, r and RMSE by hand, folds without classes,
categorical experiments unchanged, the scatter data, paired CCC differences and the cross-corpus summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_score import FOLDS, LABELS, make_fold

from cta_rnn import paired
from cta_rnn.artifacts import predictions_frame, write_label_encoder, write_predictions
from cta_rnn.cross_eval import summary_table
from cta_rnn.plots import plot_dimension_scatter
from cta_rnn.results_md import write_results_md
from cta_rnn.score import main
from cta_rnn.scoring import score_experiment, score_fold

DIMS = ["arousal", "valence"]
NAN = float("nan")
# fold 1, arousal: true [1, 2, 3, 4], pred [2, 2, 3, 5]. Means 2.5 and 3; deviations (-1.5, -0.5, 0.5, 1.5) and
# (-1, -1, 0, 2): var_y = 5/4, var_p = 6/4, cov = (1.5 + 0.5 + 0 + 3)/4 = 5/4.
# CCC = 2 cov / (var_y + var_p + (2.5 - 3)^2) = 2.5 / (1.25 + 1.5 + 0.25) = 5/6; r = 1.25 / sqrt(1.25 * 1.5);
# RMSE = sqrt((1 + 0 + 0 + 1)/4) = sqrt(1/2).
# fold 1, valence: true [1, -, 3, 5] (utterance 2 has no rating), pred [1, 5, 3, 5]: the rated three are exact,
# CCC = r = 1, RMSE = 0, n = 3 (with the unrated one counted the prediction 5 would not be exact).
# fold 2, arousal: a constant prediction 3 for true [1, 2, 3, 4]: cov = 0 -> CCC 0; r undefined (None);
# RMSE = sqrt((4 + 1 + 0 + 1)/4) = sqrt(3/2).
# fold 2, valence: true [2, 4, 4, 2], pred [3, 3, 5, 1]. Both means 3; deviations (-1, 1, 1, -1) and (0, 0, 2, -2):
# var_y = 1, var_p = 2, cov = (0 + 0 + 2 + 2)/4 = 1 -> CCC = 2 / (1 + 2 + 0) = 2/3; r = 1 / sqrt(2); RMSE = 1.
TRUE = {1: [[1, 1], [2, NAN], [3, 3], [4, 5]], 2: [[1, 2], [2, 4], [3, 4], [4, 2]]}
PRED = {1: [[2, 1], [2, 5], [3, 3], [5, 5]], 2: [[3, 3], [3, 3], [3, 5], [3, 1]]}
HAND = {
    1: {
        "arousal": {"CCC": 5 / 6, "r": 1.25 / math.sqrt(1.25 * 1.5), "RMSE": math.sqrt(0.5), "n": 4},
        "valence": {"CCC": 1.0, "r": 1.0, "RMSE": 0.0, "n": 3},
    },
    2: {
        "arousal": {"CCC": 0.0, "r": None, "RMSE": math.sqrt(1.5), "n": 4},
        "valence": {"CCC": 2 / 3, "r": 1 / math.sqrt(2), "RMSE": 1.0, "n": 4},
    },
}
MEAN_CCC = {1: (5 / 6 + 1) / 2, 2: (0 + 2 / 3) / 2}
# classes of the 'both' model: fold 1 all correct (WA = UA = 1), fold 2 neu and hap swapped (WA = UA = 0.5)
PRED_LABELS = {1: LABELS, 2: ["hap", "neu", "ang", "sad"]}
CATEGORICAL_KEYS = [
    "experiment",
    "labels",
    "folds_scored",
    "folds_missing",
    "folds_expected",
    "partial",
    "folds_available",
    "mean_std",
    "confusion",
    "pooled",
    "per_fold",
    "encoder",
]
DIMENSIONAL_KEYS = ["task", "dimensions", "mean_std_dimensional", "pooled_dimensional"]


def _sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _ccc_by_hand(y: list[float], p: list[float]) -> float:
    """Lin's CCC with population moments, written out (the pooled check)."""
    n, my, mp = len(y), sum(y) / len(y), sum(p) / len(p)
    cov = sum((a - my) * (b - mp) for a, b in zip(y, p)) / n
    vy, vp = sum((a - my) ** 2 for a in y) / n, sum((b - mp) ** 2 for b in p) / n
    return 2 * cov / (vy + vp + (my - mp) ** 2)


def make_dim_fold(fold_dir: Path, k: int, classes: bool = True, dims: list[str] = DIMS) -> None:
    """fold<k>/predictions.csv of a model with dimensions (and classes unless ``classes`` is False)."""
    pred_labels = PRED_LABELS[k]
    probs = (
        np.array([[0.7 if lab == p else 0.1 for lab in LABELS] for p in pred_labels]) if classes else np.zeros((4, 0))
    )
    cols = [DIMS.index(d) for d in dims]
    true, pred = np.array(TRUE[k], dtype=float)[:, cols], np.array(PRED[k], dtype=float)[:, cols]
    ids = [f"fold{k}_utt{i}" for i in range(4)]
    frame = predictions_frame(ids, LABELS, probs, np.zeros((4, 0)), LABELS, [], dims, true, pred)
    write_predictions(fold_dir, frame)
    write_label_encoder(fold_dir / "label_encoder.txt", LABELS)


def make_dim_exp(exp: Path, classes: bool = True) -> Path:
    for k in TRUE:
        make_dim_fold(exp / f"fold{k}", k, classes)
    return exp


def test_fold_scores_by_hand(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "both")
    for k in (1, 2):
        scores, df = score_fold(exp / f"fold{k}")
        assert list(scores["dimensional"]) == DIMS
        for d in DIMS:
            got, want = scores["dimensional"][d], HAND[k][d]
            assert got["n"] == want["n"]
            for m in ("CCC", "r", "RMSE"):
                assert got[m] == (None if want[m] is None else pytest.approx(want[m], abs=1e-9)), (k, d, m)
        assert scores["mean_CCC"] == pytest.approx(MEAN_CCC[k])
        assert scores["wa"] == pytest.approx(1.0 if k == 1 else 0.5)


def test_missing_rating_is_an_empty_cell_and_left_out(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "both")
    raw = pd.read_csv(exp / "fold1" / "predictions.csv", dtype=str, keep_default_na=False)
    assert raw.loc[1, "true_valence"] == "" and raw.loc[1, "pred_valence"] == "5.0"
    scores, _ = score_fold(exp / "fold1")
    assert scores["dimensional"]["valence"]["n"] == 3 and scores["dimensional"]["arousal"]["n"] == 4
    assert scores["dimensional"]["valence"]["CCC"] == pytest.approx(1.0)  # the unrated prediction 5 is not counted


def test_constant_prediction_has_ccc_zero_and_no_r(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "both")
    arousal = score_fold(exp / "fold2")[0]["dimensional"]["arousal"]
    assert arousal["CCC"] == 0.0 and arousal["r"] is None


def test_both_experiment_results_json_md_csv_and_scatter(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "both")
    res = score_experiment(exp)
    assert list(res) == CATEGORICAL_KEYS + DIMENSIONAL_KEYS
    assert res["task"] == "both" and res["dimensions"] == DIMS
    assert res["mean_std"]["wa"]["mean"] == pytest.approx(0.75) and res["confusion"] is not None
    md = res["mean_std_dimensional"]
    for d in DIMS:
        cccs = [HAND[k][d]["CCC"] for k in (1, 2)]
        assert md[d]["CCC"]["mean"] == pytest.approx(sum(cccs) / 2, abs=1e-6)
        assert md[d]["CCC"]["std"] == pytest.approx(_sample_std(cccs), abs=1e-6)
        rmses = [HAND[k][d]["RMSE"] for k in (1, 2)]
        assert md[d]["RMSE"]["mean"] == pytest.approx(sum(rmses) / 2, abs=1e-6)
    # arousal r is undefined in fold 2: the mean is fold 1's, over one fold, without a std
    assert md["arousal"]["r"] == {"mean": pytest.approx(HAND[1]["arousal"]["r"], abs=1e-6), "std": None, "n": 1}
    assert md["mean_CCC"]["mean"] == pytest.approx((MEAN_CCC[1] + MEAN_CCC[2]) / 2, abs=1e-6)
    assert md["mean_CCC"]["std"] == pytest.approx(_sample_std(list(MEAN_CCC.values())), abs=1e-6)
    pooled = res["pooled_dimensional"]
    y = [1, 2, 3, 4, 1, 2, 3, 4]
    assert pooled["arousal"]["CCC"] == pytest.approx(_ccc_by_hand(y, [2, 2, 3, 5, 3, 3, 3, 3]), abs=1e-6)
    assert pooled["valence"]["n"] == 7
    assert pooled["valence"]["CCC"] == pytest.approx(
        _ccc_by_hand([1, 3, 5, 2, 4, 4, 2], [1, 3, 5, 3, 3, 5, 1]), abs=1e-6
    )
    assert json.loads((exp / "results.json").read_text()) == res

    text = (exp / "results.md").read_text()
    assert "| Fold | #Utts | WA (%) | UA (%) | F1 (%) | CCC arousal | CCC valence | mean CCC |" in text
    assert "| 1 | 4 | 100.00 | 100.00 | 100.00 | 0.833 | 1.000 | 0.917 |" in text
    assert "| 2 | 4 | 50.00 | 50.00 | 50.00 | 0.000 | 0.667 | 0.333 |" in text
    assert "| Mean ± std | 8 | 75.00 ± 35.36 | 75.00 ± 35.36 | 75.00 ± 35.36 | 0.417 ± 0.589 | 0.833 ± 0.236 |" in text
    assert "## Confusion matrix" in text and "![predicted vs true per dimension](scatter_dimensions.png)" in text

    csv = pd.read_csv(exp / "scores_per_fold.csv")
    assert csv["ccc_arousal"].tolist() == pytest.approx([5 / 6, 0.0], abs=1e-6)
    assert csv["n_valence"].tolist() == [3, 4] and csv["ua"].tolist() == pytest.approx([1.0, 0.5])

    assert (exp / "scatter_dimensions.png").read_bytes()[:4] == b"\x89PNG"
    points = pd.read_csv(exp / "scatter_dimensions.csv", dtype={"ID": str})
    assert list(points.columns) == ["dimension", "fold", "ID", "true", "pred"]
    arousal, valence = points[points["dimension"] == "arousal"], points[points["dimension"] == "valence"]
    assert arousal["true"].tolist() == y and arousal["pred"].tolist() == [2, 2, 3, 5, 3, 3, 3, 3]
    assert arousal["fold"].tolist() == [1] * 4 + [2] * 4
    assert len(valence) == 7 and "fold1_utt1" not in set(valence["ID"])  # no rating: no point


def test_dimensional_only_experiment(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "dim_only", classes=False)
    assert pd.read_csv(exp / "fold1" / "predictions.csv", keep_default_na=False)["predicted"].tolist() == [""] * 4
    res = score_experiment(exp)
    assert res["task"] == "dimensional" and res["labels"] == LABELS
    assert res["mean_std"]["ua"] == {"mean": None, "std": None, "n": 0} and res["confusion"] is None
    assert res["pooled"]["wa"] is None and res["pooled"]["n"] == 8
    assert [sorted(f) for f in res["per_fold"]] == [["dimensional", "fold", "mean_CCC", "n"]] * 2
    assert res["per_fold"][0]["dimensional"]["arousal"]["CCC"] == pytest.approx(5 / 6, abs=1e-6)
    assert not (exp / "confusion.png").exists() and (exp / "scatter_dimensions.png").is_file()
    text = (exp / "results.md").read_text()
    assert "No class predictions" in text and "WA (%)" not in text and "Confusion" not in text
    assert "| Fold | #Utts | CCC arousal | CCC valence | mean CCC |" in text
    assert "| 1 | 4 | 0.833 | 1.000 | 0.917 |" in text
    assert "| arousal | 0.417 ± 0.589 |" in text
    assert "wa" not in pd.read_csv(exp / "scores_per_fold.csv").columns

    make_fold(tmp_path / "exp" / "cat" / "fold1", *FOLDS[2])
    score_experiment(tmp_path / "exp" / "cat")
    rows = [r for r in write_results_md(tmp_path).read_text().splitlines() if r.startswith("| [")]
    assert (
        "| Experiment | Folds | WA (%) | UA (%) | F1 (%) | CCC (mean; per dimension) | Encoder |"
        in (tmp_path / "RESULTS.md").read_text()
    )
    assert rows[0] == "| [cat](exp/cat/results.md) | 1 | 100.00 | 100.00 | 100.00 | - | — |"
    assert rows[1] == (
        "| [dim_only](exp/dim_only/results.md) | 2 | — | — | — | 0.625 ± 0.412 (arousal 0.417, valence 0.833) | — |"
    )


def test_categorical_experiment_unchanged(tmp_path: Path) -> None:
    """A model without dimensions keeps exactly its keys, and a 'both' model's categorical part is the same."""
    cat, both = tmp_path / "exp" / "cat", make_dim_exp(tmp_path / "exp" / "both")
    for k in (1, 2):
        df = pd.read_csv(both / f"fold{k}" / "predictions.csv", keep_default_na=False)
        cols = [c for c in df.columns if not c.startswith(("true_", "pred_"))]
        write_predictions(cat / f"fold{k}", df[cols])
        write_label_encoder(cat / f"fold{k}" / "label_encoder.txt", LABELS)
    res_cat, res_both = score_experiment(cat), score_experiment(both)
    assert list(res_cat) == CATEGORICAL_KEYS
    assert all(sorted(f) == sorted(res_cat["per_fold"][0]) and "dimensional" not in f for f in res_cat["per_fold"])
    stripped = {k: v for k, v in res_both.items() if k not in DIMENSIONAL_KEYS and k != "experiment"}
    stripped["per_fold"] = [
        {k: v for k, v in f.items() if k not in ("dimensional", "mean_CCC")} for f in stripped["per_fold"]
    ]
    assert stripped == {k: v for k, v in res_cat.items() if k != "experiment"}
    text = (cat / "results.md").read_text()
    assert "CCC" not in text and not (cat / "scatter_dimensions.png").exists()
    assert "| Fold | #Utts | WA (%) | UA (%) | F1 (%) |\n" in text


def test_folds_that_predict_different_things_are_refused(tmp_path: Path) -> None:
    exp = tmp_path / "exp" / "mixed"
    make_dim_fold(exp / "fold1", 1)
    make_dim_fold(exp / "fold2", 2, classes=False)
    with pytest.raises(ValueError, match=r"fold2.*no classes.*fold 1 classes"):
        score_experiment(exp, write=False)
    make_dim_fold(exp / "fold2", 2, dims=["arousal"])
    with pytest.raises(ValueError, match=r"dimensions \['arousal'\]"):
        score_experiment(exp, write=False)


def test_scatter_data_holds_the_rated_points(tmp_path: Path) -> None:
    true = np.array([[1.0, NAN], [2.0, 3.0], [4.0, 2.0]])
    pred = np.array([[1.5, 2.0], [2.5, 3.5], [3.0, 2.5]])
    path, points = plot_dimension_scatter(true, pred, ["arousal", "valence"], tmp_path / "s.png", folds=[1, 1, 2])
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert points.to_dict("list") == {
        "dimension": ["arousal"] * 3 + ["valence"] * 2,
        "fold": [1, 1, 2, 1, 2],
        "ID": ["0", "1", "2", "1", "2"],
        "true": [1.0, 2.0, 4.0, 3.0, 2.0],
        "pred": [1.5, 2.5, 3.0, 3.5, 2.5],
    }
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv", dtype={"ID": str}), points, check_dtype=False)


def test_paired_on_ccc(tmp_path: Path, capsys) -> None:
    ref = make_dim_exp(tmp_path / "exp" / "ref")
    var = tmp_path / "exp" / "var"
    for k in (1, 2):  # the variant predicts the truth on fold 1's arousal, a constant 2.5 on fold 2's
        make_dim_fold(var / f"fold{k}", k)
        df = pd.read_csv(var / f"fold{k}" / "predictions.csv", keep_default_na=False)
        df["pred_arousal"] = [1, 2, 3, 4] if k == 1 else [2.5] * 4
        write_predictions(var / f"fold{k}", df)
    for exp in (ref, var):
        score_experiment(exp)
    s = paired.compare(paired.per_fold(ref, "ccc_arousal"), paired.per_fold(var, "ccc_arousal"))
    assert s["folds"] == [1, 2] and s["diff"] == pytest.approx([1 - 5 / 6, 0.0], abs=1e-6)  # CCC 1 - 5/6; 0 - 0
    assert (s["wins"], s["ties"], s["losses"]) == (1, 1, 0)
    mean = paired.compare(paired.per_fold(ref, "ccc"), paired.per_fold(var, "ccc"))
    assert mean["diff"] == pytest.approx([(1 - 5 / 6) / 2, 0.0], abs=1e-6)
    md = paired.write_paired(ref, [var], tmp_path / "ablations", metric="ccc_arousal")
    assert "(CCC arousal, differences in CCC)" in md and "Reference CCC arousal per fold: 1: 0.833, 2: 0.000." in md
    assert "| var | +0.167 | +0.000 | +0.083 ± 0.118 | 1/1/0 |" in md
    assert json.loads((tmp_path / "ablations.json").read_text())["metric"] == "ccc_arousal"
    assert "| var | +0.0 | +0.0 |" in paired.write_paired(ref, [var], tmp_path / "ua")  # UA: points, as before
    with pytest.raises(ValueError, match="no dimension 'dominance'"):
        paired.per_fold(ref, "ccc_dominance")
    with pytest.raises(ValueError, match="expected one of"):
        paired.per_fold(ref, "cc")
    assert main(["--paired", str(ref), str(var), "--paired_out", str(tmp_path / "cli"), "--paired_metric", "ccc"]) == 0
    assert "(mean CCC, differences in CCC)" in capsys.readouterr().out
    assert main(["--paired", str(ref), str(var), "--paired_out", str(tmp_path / "p"), "--metric", "ccc_valence"]) == 0
    assert (tmp_path / "p.md").read_text().startswith("# Paired per-fold differences to `ref` (CCC valence")


def test_paired_ua_of_a_dimensional_only_model_says_to_use_ccc(tmp_path: Path) -> None:
    exp = make_dim_exp(tmp_path / "exp" / "dim_only", classes=False)
    score_experiment(exp)
    with pytest.raises(ValueError, match="no UA per fold.*use ccc"):
        paired.per_fold(exp, "ua")


def test_summary_table_with_dimensions(tmp_path: Path) -> None:
    recipes, cross = tmp_path / "recipes", tmp_path / "recipes" / "cross_corpus" / "exp"
    score_experiment(make_dim_exp(recipes / "IEMOCAP" / "exp" / "m"))
    score_experiment(make_dim_exp(cross / "IEMOCAP_to_MSP-IMPROV_m", classes=False))
    lines = summary_table(recipes, cross, "m", ["IEMOCAP", "MSP-IMPROV"]).splitlines()
    assert lines[2] == (
        "| train | test | kind | folds | WA (%) | UA (%) | F1 (%) | mean CCC | CCC arousal | CCC valence |"
    )
    assert lines[3] == "|---|---|---|---|---|---|---|---|---|---|"
    assert lines[4] == (
        "| IEMOCAP | IEMOCAP | within | 2 | 75.00 ± 35.36 | 75.00 ± 35.36 | 75.00 ± 35.36 "
        "| 0.625 ± 0.412 | 0.417 ± 0.589 | 0.833 ± 0.236 |"
    )
    assert lines[5] == (
        "| IEMOCAP | MSP-IMPROV | cross | 2 | — | — | — | 0.625 ± 0.412 | 0.417 ± 0.589 | 0.833 ± 0.236 |"
    )
    assert lines[6] == "| MSP-IMPROV | IEMOCAP | cross | - | - | - | - | - | - | - |"

    make_fold(recipes / "MSP-IMPROV" / "exp" / "c" / "fold1", *FOLDS[2])
    score_experiment(recipes / "MSP-IMPROV" / "exp" / "c")
    plain = summary_table(recipes, cross, "c", ["IEMOCAP", "MSP-IMPROV"]).splitlines()
    assert plain[2:4] == ["| train | test | kind | folds | WA (%) | UA (%) | F1 (%) |", "|---|---|---|---|---|---|---|"]
    assert plain[4] == "| IEMOCAP | IEMOCAP | within | - | - | - | - |"
    assert plain[7] == "| MSP-IMPROV | MSP-IMPROV | within | 1 | 100.00 | 100.00 | 100.00 |"
