"""Stage 3 scoring on fake experiment folders: hand-computed results, tables, RESULTS.md, idempotency."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from cta_rnn.artifacts import read_label_encoder, write_folds_list
from cta_rnn.results_md import write_results_md
from cta_rnn.score import main
from cta_rnn.scoring import collect_layer_sweep, score_experiment

LABELS = ["neu", "hap", "ang", "sad"]
ENCODER_TXT = "'neu' => 0\n'hap' => 1\n'ang' => 2\n'sad' => 3\n================\n'starting_index' => 0\n"
FOLDS = {
    # WA 8/10 = 0.8; recall neu 1, hap 1/2, ang 0, sad 1 -> UA 0.625; F1 (6/7 + 2/3 + 0 + 1)/4 = 53/84
    1: (["neu"] * 6 + ["hap", "hap", "ang", "sad"], ["neu"] * 6 + ["neu", "hap", "neu", "sad"]),
    # all correct: WA = UA = F1 = 1
    2: (LABELS, LABELS),
    # neu and hap swapped: WA 2/4 = 0.5; recall 0, 0, 1, 1 -> UA 0.5; F1 (0 + 0 + 1 + 1)/4 = 0.5
    3: (LABELS, ["hap", "neu", "ang", "sad"]),
}
HAND = {"wa": [0.8, 1.0, 0.5], "ua": [0.625, 1.0, 0.5], "macro_f1": [53 / 84, 1.0, 0.5]}
# summed confusion: fold1 [[6,0,0,0],[1,1,0,0],[1,0,0,0],[0,0,0,1]] + identity + fold3 (neu<->hap swapped)
HAND_CM = [[7, 1, 0, 0], [2, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 3]]


def _sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def make_fold(fold_dir: Path, true: list[str], pred: list[str], att_layers: int = 0, encoder_txt: bool = True) -> None:
    fold_dir.mkdir(parents=True)
    rows = []
    for i, (t, p) in enumerate(zip(true, pred)):
        row = {"ID": f"{fold_dir.name}_utt{i:02d}", "true": t, "predicted": p}
        row |= {f"prob_{lab}": 0.7 if lab == p else 0.1 for lab in LABELS}
        row |= {f"att_layer{j}": round(0.2 + 0.05 * j + (0.3 if t == "ang" else 0), 3) for j in range(att_layers)}
        rows.append(row)
    pd.DataFrame(rows).to_csv(fold_dir / "predictions.csv", index=False)
    if encoder_txt:
        (fold_dir / "label_encoder.txt").write_text(ENCODER_TXT)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """recipe/exp/cta_fake/fold{1,2,3} finished, fold4 unfinished; recipe/exp/baseline_fake with one fold."""
    exp = tmp_path / "exp" / "cta_fake"
    for k, (true, pred) in FOLDS.items():
        make_fold(exp / f"fold{k}", true, pred, att_layers=3, encoder_txt=k != 3)
    (exp / "fold4").mkdir()
    (exp / "fold4" / "train_log.txt").write_text("epoch: 1\n")
    (exp / "encoder.json").write_text(json.dumps({"source": "openai/whisper-tiny.en", "revision": "abc123"}))
    make_fold(tmp_path / "exp" / "baseline_fake" / "fold1", *FOLDS[3])
    return tmp_path


def test_read_label_encoder(tmp_path: Path) -> None:
    (tmp_path / "le.txt").write_text("'sad' => 1\n'neu' => 0\n================\n'starting_index' => 0\n")
    assert read_label_encoder(tmp_path / "le.txt") == ["neu", "sad"]


def test_score_experiment_hand_computed(recipe: Path) -> None:
    exp = recipe / "exp" / "cta_fake"
    res = score_experiment(exp)
    assert res["labels"] == LABELS and res["folds_scored"] == [1, 2, 3]
    assert res["folds_missing"] == [4] and res["partial"] and res["folds_expected"] == [1, 2, 3, 4]
    for key, vals in HAND.items():
        assert [f[key] for f in res["per_fold"]] == pytest.approx(vals, abs=1e-6)
        assert res["mean_std"][key]["mean"] == pytest.approx(sum(vals) / 3, abs=1e-6)
        assert res["mean_std"][key]["std"] == pytest.approx(_sample_std(vals), abs=1e-6)
    # WA: mean 2.3/3 = 0.766667, std sqrt((0.0333^2 + 0.2333^2 + 0.2667^2)/2) = 0.251661
    assert res["mean_std"]["wa"]["mean"] == pytest.approx(0.766667, abs=1e-6)
    assert res["mean_std"]["wa"]["std"] == pytest.approx(0.251661, abs=1e-6)
    assert res["confusion"] == HAND_CM
    # pooled: 18 utterances, 7 + 2 + 2 + 3 = 14 correct
    assert res["pooled"]["n"] == 18 and res["pooled"]["wa"] == pytest.approx(14 / 18, abs=1e-6)
    assert res["encoder"] == {"source": "openai/whisper-tiny.en", "revision": "abc123"}
    assert json.loads((exp / "results.json").read_text()) == res

    md = (exp / "results.md").read_text()
    assert "partial: 3 of 4 folds; missing: 4" in md
    assert "| 1 | 10 | 80.00 | 62.50 | 63.10 |" in md
    assert "| 2 | 4 | 100.00 | 100.00 | 100.00 |" in md
    assert "| 3 | 4 | 50.00 | 50.00 | 50.00 |" in md
    assert "| Mean ± std | 18 | 76.67 ± 25.17 | 70.83 ± 26.02 | 71.03 ± 25.93 |" in md
    assert "| neu | 7 | 1 | 0 | 0 |" in md

    csv = pd.read_csv(exp / "scores_per_fold.csv")
    assert csv["fold"].tolist() == [1, 2, 3] and csv["ua"].tolist() == pytest.approx(HAND["ua"], abs=1e-6)
    assert csv["recall_hap"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    for png in ("confusion.png", "channel_attention.png", "fold1/channel_attention.png"):
        assert (exp / png).read_bytes()[:4] == b"\x89PNG"


def test_expected_folds_and_require_complete(recipe: Path) -> None:
    exp = recipe / "exp" / "cta_fake"
    res = score_experiment(exp, expected_folds=5, write=False)
    assert res["folds_missing"] == [4, 5] and res["folds_expected"] == [1, 2, 3, 4, 5]
    res = score_experiment(exp, expected_folds=[1, 2, 3], write=False)
    assert not res["partial"] and res["folds_missing"] == []
    with pytest.raises(RuntimeError, match=r"folds \[4\] are not finished"):
        score_experiment(exp, require_complete=True)
    write_folds_list(exp, [1, 2, 3, 4, 5, 6])
    assert score_experiment(exp, write=False)["folds_missing"] == [4, 5, 6]
    (exp / "folds.json").write_text(json.dumps([1, 2]))  # one shape only: the one artifacts writes
    with pytest.raises(ValueError, match="expected"):
        score_experiment(exp, write=False)


def test_bad_predictions_are_named(recipe: Path) -> None:
    fold = recipe / "exp" / "baseline_fake" / "fold1"
    df = pd.read_csv(fold / "predictions.csv")
    df.loc[0, "true"] = "fru"
    df.to_csv(fold / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"fold1.*\['fru'\] not in the label set"):
        score_experiment(fold.parent)
    with pytest.raises(FileNotFoundError, match="no finished fold"):
        score_experiment(recipe / "exp" / "nothing_here")


def test_cli_results_md_lists_both_experiments_and_is_idempotent(recipe: Path, monkeypatch, capsys) -> None:
    exp_dir = recipe / "exp"
    assert main(["--exp", str(exp_dir / "cta_fake"), str(exp_dir / "baseline_fake"), "--expected_folds", "4"]) == 0
    assert "partial, missing folds [4]" in capsys.readouterr().out
    results = (recipe / "RESULTS.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| [")]
    assert rows == [
        (
            "| [baseline_fake](exp/baseline_fake/results.md) | 1 of 4 (partial) | 50.00 | 50.00 | 50.00 "
            "| — |"  # no encoder.json: unknown (no guessing from hyperparams.yaml)
        ),
        (
            "| [cta_fake](exp/cta_fake/results.md) | 3 of 4 (partial) | 76.67 ± 25.17 | 70.83 ± 26.02 | 71.03 ± 25.93 "
            "| openai/whisper-tiny.en@abc123 |"
        ),
    ]
    assert "| CTA-RNN (paper, Chen & Zhang 2022) | _to fill from paper_ |" in results
    for key in ("date", "python version", "torch version", "speechbrain version", "transformers version", "git hash"):
        assert f"- {key}: `" in results

    outputs = ["results.json", "results.md", "scores_per_fold.csv", "confusion.png", "channel_attention.png"]
    before = {name: (exp_dir / "cta_fake" / name).read_bytes() for name in outputs}
    main(["--exp", str(exp_dir / "cta_fake"), "--expected_folds", "4"])
    assert {name: (exp_dir / "cta_fake" / name).read_bytes() for name in outputs} == before
    undated = re.sub(r"- date: `[^`]*`", "", (recipe / "RESULTS.md").read_text())
    assert undated == re.sub(r"- date: `[^`]*`", "", results)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert "- date: `1970-01-01 00:00:00 UTC`" in write_results_md(recipe).read_text()
    assert not [p for p in (exp_dir / "cta_fake").rglob(".*")], "temp files left behind"


def test_collect_layer_sweep(recipe: Path) -> None:
    exp_dir = recipe / "exp"
    for tag in ("cta_fake", "baseline_fake"):
        score_experiment(exp_dir / tag)
    points = collect_layer_sweep(
        {3: exp_dir / "cta_fake", 0: exp_dir / "baseline_fake", 7: exp_dir / "nope"}, exp_dir / "layer_sweep.png"
    )
    assert list(points) == [0, 3] and points[3]["ua_mean"] == pytest.approx(sum(HAND["ua"]) / 3, abs=1e-6)
    assert (exp_dir / "layer_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert pd.read_csv(exp_dir / "layer_sweep.csv")["layer"].tolist() == [0, 3]
