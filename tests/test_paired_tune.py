"""Stage 4's paired comparison and stage 5's validation-only selection, against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cta_rnn import paired, tune
from cta_rnn.artifacts import write_test_results


def scored(exp: Path, ua: dict[int, float]) -> Path:
    """An experiment folder with a results.json holding these per-fold UAs."""
    exp.mkdir(parents=True)
    (exp / "results.json").write_text(json.dumps({"per_fold": [{"fold": k, "ua": v} for k, v in ua.items()]}))
    return exp


def test_paired_differences_and_tests_by_hand(tmp_path: Path) -> None:
    ref = scored(tmp_path / "cta", {1: 0.8, 2: 0.9, 3: 0.7})
    worse = scored(tmp_path / "no_ca", {1: 0.7, 2: 0.9, 3: 0.6, 4: 0.5})  # fold 4 has no pair: ignored
    s = paired.compare(paired.per_fold(ref), paired.per_fold(worse))
    assert s["folds"] == [1, 2, 3] and s["diff"] == pytest.approx([-0.1, 0.0, -0.1])
    assert (s["wins"], s["ties"], s["losses"]) == (0, 1, 2)
    assert s["mean"] == pytest.approx(-0.2 / 3) and s["sign_p"] == pytest.approx(0.5)  # 2 * 0.5**2
    ten = paired.compare({k: 0.9 for k in range(10)}, {k: 0.8 - 0.01 * k for k in range(10)})
    assert ten["sign_p"] == pytest.approx(2 * 0.5**10) and ten["wilcoxon_p"] == pytest.approx(2 / 2**10)
    md = paired.write_paired(ref, [worse], tmp_path / "ablations")
    assert "| no_ca | -10.0 | +0.0 | -10.0 | -6.7 ± 5.8 | 0/1/2 |" in md
    assert (tmp_path / "ablations.csv").read_text().count("\n") == 4


def test_grid_points_tags_and_overrides(tmp_path: Path) -> None:
    y = tmp_path / "tune.yaml"
    y.write_text("grid:\n  lr: [0.001, 0.002]\n  model_kwargs: [{dropout: 0.3}]\n")
    points = tune.grid_points(y)
    assert points == [{"lr": 0.001, "model_kwargs": {"dropout": 0.3}}, {"lr": 0.002, "model_kwargs": {"dropout": 0.3}}]
    assert tune.point_tag(points[0]) == "lr0.001-dropout0.3"
    assert tune.point_overrides(points[1]) == '--lr=0.002 --model_kwargs={"dropout":0.3}'
    assert " " not in tune.point_overrides(points[1]).split(" ", 1)[1]  # one word per override
    y.write_text("grid: {lr: []}\n")
    with pytest.raises(ValueError, match="non-empty lists"):
        tune.grid_points(y)


def test_selection_uses_validation_only(tmp_path: Path) -> None:
    def exp(name: str, valid: list[float], test: list[float]) -> Path:
        for k, (v, t) in enumerate(zip(valid, test), 1):
            write_test_results(tmp_path / name / f"fold{k}", {"valid_UA": v, "test": {"UA": t}})
        return tmp_path / name

    a = exp("a", [0.9, 0.8], [0.5, 0.6])  # best on validation, worse on test
    b = exp("b", [0.7, 0.8], [0.9, 0.9])
    sel = tune.select([a, b])
    assert sel["chosen"] == "a" and sel["valid_UA"] == pytest.approx({"a": 0.85, "b": 0.75})
    assert sel["test_UA_mean"] == pytest.approx(0.55)
    md = tune.selection_markdown(sel)
    assert "a **(chosen)**" in md and "90.00" not in md  # b's test score is never shown


def test_equal_validation_keeps_the_first_declared_point(tmp_path: Path) -> None:
    """Per-fold UAs with the same sum tie (their float means may still differ in the last bit)."""
    folds = [c / 44 for c in (36, 41, 41, 43, 39, 39, 38, 38, 41, 41)]  # correct clips of 44, as in the mini recipe
    other = [c / 44 for c in (34, 42, 41, 42, 40, 38, 38, 41, 40, 41)]
    for name, valid in (("first", folds), ("second", other)):
        for k, v in enumerate(valid, 1):
            write_test_results(tmp_path / name / f"fold{k}", {"valid_UA": v, "test": {"UA": 0.5}})
    assert np.mean(folds) != np.mean(other)  # the float means differ in the last bit
    assert tune.select([tmp_path / "first", tmp_path / "second"])["chosen"] == "first"
    assert tune.select([tmp_path / "second", tmp_path / "first"])["chosen"] == "second"


def test_a_fold_subset_is_labelled_wherever_its_score_is_printed(tmp_path: Path) -> None:
    from cta_rnn.artifacts import read_available_folds, read_folds_list, write_folds_list
    from cta_rnn.results_md import folds_cell
    from cta_rnn.scoring import experiment_markdown, subset_of

    write_folds_list(tmp_path, [3, 1, 1], available=range(1, 11))
    assert read_folds_list(tmp_path) == [1, 3] and read_available_folds(tmp_path) == list(range(1, 11))
    res = {"folds_scored": [1, 3], "folds_available": list(range(1, 11)), "partial": False}
    assert subset_of(res) == 10 and folds_cell(res) == "2 of 10 (subset)"
    assert folds_cell({**res, "folds_available": [1, 3]}) == "2"
    ms = {k: {"mean": 0.5, "std": 0.1} for k in ("wa", "ua", "macro_f1")}
    full = {
        **res,
        "experiment": "x",
        "labels": ["a"],
        "folds_missing": [],
        "folds_expected": [1, 3],
        "mean_std": ms,
        "per_fold": [],
        "pooled": {"n": 0, "wa": 0.5, "ua": 0.5, "macro_f1": 0.5},
        "confusion": [[0]],
    }
    assert "a SUBSET of the protocol's 10 folds" in experiment_markdown(full, has_att=False)
