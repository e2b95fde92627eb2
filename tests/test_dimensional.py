"""Dimensional emotion: CCC / r / RMSE and the CCC loss against hand-computed values, masking of missing ratings,
the regression head (padding, scaling, old specs), and a toy fold trained with task both and dimensional."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from toy_data import toy_training_argv

from cta_rnn.dimensional import ccc, ccc_loss, dimension_scores, mean_ccc, mse_loss, pearson, rmse, training_stats
from cta_rnn.hparams_schema import HparamsError
from cta_rnn.models import build_model, split_outputs

Y = [1.0, 2.0, 3.0, 4.0]
P = [2.0, 2.0, 3.0, 5.0]
# By hand: mean y 2.5, mean p 3; var y (1/N) = (2.25+0.25+0.25+2.25)/4 = 1.25; p - 3 = [-1,-1,0,2]: var p = 6/4 = 1.5;
# cov = (1.5 + 0.5 + 0 + 3)/4 = 1.25; CCC = 2*1.25 / (1.25 + 1.5 + 0.25) = 2.5/3; r = 1.25/sqrt(1.25*1.5);
# RMSE = sqrt((1 + 0 + 0 + 1)/4).
CCC_YP = 2.5 / 3
R_YP = 1.25 / math.sqrt(1.25 * 1.5)
RMSE_YP = math.sqrt(0.5)


def test_metrics_against_hand_computed_values() -> None:
    assert ccc(Y, P) == pytest.approx(CCC_YP, rel=1e-12)
    assert pearson(Y, P) == pytest.approx(R_YP, rel=1e-12)
    assert rmse(Y, P) == pytest.approx(RMSE_YP, rel=1e-12)
    assert ccc(Y, Y) == 1.0 and ccc(Y, [5 - y for y in Y]) == pytest.approx(-1.0)
    assert ccc(Y, [2.5] * 4) == 0.0  # a constant prediction at the mean
    assert ccc(Y, [9.0] * 4) == 0.0  # a constant anywhere: covariance 0
    assert math.isnan(pearson(Y, [3.0] * 4))


def test_missing_ratings_are_left_out() -> None:
    y = np.array([1.0, np.nan, 2.0, 3.0, np.nan, 4.0])
    p = np.array([2.0, 100.0, 2.0, 3.0, -50.0, 5.0])
    assert ccc(y, p) == pytest.approx(CCC_YP, rel=1e-12)
    scores = dimension_scores(np.stack([y, [np.nan] * 6], 1), np.stack([p, p], 1), ["arousal", "valence"])
    assert scores["arousal"]["n"] == 4 and scores["arousal"]["RMSE"] == pytest.approx(RMSE_YP)
    assert scores["valence"]["n"] == 0 and math.isnan(scores["valence"]["CCC"])
    assert mean_ccc(scores) == pytest.approx(CCC_YP)  # the unrated dimension does not enter the mean


def test_ccc_loss_matches_the_metric_masks_and_has_gradients() -> None:
    pred = torch.tensor([P, [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64).T.clone().requires_grad_(True)
    target = torch.tensor([Y, [np.nan, 1.0, np.nan, np.nan]], dtype=torch.float64).T
    loss = ccc_loss(pred, target)  # the second dimension has one rating: left out
    assert float(loss.detach()) == pytest.approx(1 - CCC_YP, rel=1e-12)
    loss.backward()
    assert pred.grad[:, 0].abs().sum() > 0 and pred.grad[:, 1].abs().sum() == 0
    constant = torch.full((4, 1), 2.5, dtype=torch.float64)
    assert float(ccc_loss(constant, torch.tensor(Y, dtype=torch.float64)[:, None])) == pytest.approx(1.0)
    none = torch.zeros(3, 2, requires_grad=True)
    zero = ccc_loss(none, torch.full((3, 2), float("nan")))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_mse_loss_on_standardised_values() -> None:
    pred = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    target = torch.tensor([[1.0, float("nan")], [2.0, float("nan")]])
    assert float(mse_loss(pred, target)) == pytest.approx((1 + 4) / 2)
    assert float(mse_loss(pred, target, torch.tensor([2.0, 1.0]))) == pytest.approx((0.25 + 1) / 2)


def test_training_stats_and_a_dimension_without_ratings() -> None:
    stats = training_stats(np.array([[1.0], [3.0], [np.nan]]), ["arousal"])
    assert stats == {"arousal": [2.0, 1.0]}
    with pytest.raises(ValueError, match="train.csv: no utterance has a valence rating"):
        training_stats(np.array([[1.0, np.nan], [3.0, np.nan]]), ["arousal", "valence"], "train.csv")


def spec(task: str = "categorical", **extra) -> dict:
    base = {
        "model_class": "CTARNN",
        "model_kwargs": {"rnn_hidden": 8, "attention_hidden": 4, "classifier_hidden": 8, "input_mean": True},
        "normalization": "none",
        "labels": ["neu", "hap", "ang", "sad"],
        "num_layers": 3,
        "dim": 6,
    }
    if task != "categorical":
        base.update(task=task, dimensions=["arousal", "valence"])
    return {**base, **extra}


def test_a_spec_without_task_builds_the_categorical_model_of_before() -> None:
    model = build_model(spec())
    assert model.regressor is None and not any(k.startswith("regressor") for k in model.state_dict())
    assert model(torch.randn(2, 3, 5, 6), torch.ones(2)).shape == (2, 4)
    dim_only = build_model(spec("dimensional"))
    assert dim_only.classifier is None and dim_only(torch.randn(2, 3, 5, 6), torch.ones(2)).shape == (2, 2)
    for name in ("WeightedSumPool", "RNNMeanPool"):
        kwargs = {} if name == "WeightedSumPool" else {"rnn_hidden": 8, "classifier_hidden": 8}
        out = build_model(spec("both", model_class=name, model_kwargs=kwargs))(torch.randn(2, 3, 5, 6), torch.ones(2))
        assert out.shape == (2, 6)
    with pytest.raises(ValueError, match="num_dimensions"):
        build_model(spec(model_kwargs={"num_dimensions": 2}))


def test_regression_outputs_are_on_the_training_scale_and_padding_free() -> None:
    torch.manual_seed(0)
    model = build_model(spec("both", dimension_stats={"arousal": [3.0, 0.5], "valence": [2.0, 2.0]})).eval()
    x = torch.randn(1, 3, 7, 6)
    pooled = torch.randn(1, model.regressor.net[0].in_features)
    scaled = model.regressor.net(pooled) * torch.tensor([0.5, 2.0]) + torch.tensor([3.0, 2.0])
    assert torch.equal(model.regressor(pooled), scaled)
    alone = model(x, torch.ones(1))
    padded = torch.cat([x, torch.randn(1, 3, 5, 6) * 100], dim=2)
    batch = torch.cat([padded, torch.randn(1, 3, 12, 6)])
    together = model(batch, torch.tensor([7 / 12, 1.0]))
    _, dims_alone = split_outputs(alone, 4)
    _, dims_batch = split_outputs(together, 4)
    # float32 sums over at most 12 frames of width <= 16 per step: bound 2u*sqrt(K)*depth*|x| stays far below 1e-4
    assert torch.allclose(dims_batch[:1], dims_alone, atol=1e-4, rtol=0)


def test_select_key_follows_the_task_and_refuses_a_missing_metric() -> None:
    from cta_rnn.train import resolve_select_key

    assert resolve_select_key({"task": "dimensional", "select_by": "auto"}) == "CCC"
    assert resolve_select_key({"task": "both", "select_by": "auto"}) == "UA"
    assert resolve_select_key({"task": "both", "select_by": "CCC"}) == "CCC"
    assert resolve_select_key({}) == "UA"
    with pytest.raises(HparamsError, match="select_by: UA needs a task"):
        resolve_select_key({"task": "dimensional", "select_by": "UA"})


@pytest.mark.parametrize("task", ["both", "dimensional"])
def test_a_toy_fold_learns_the_dimensions(task: str, tmp_path: Path) -> None:
    from cta_rnn.train import main

    out = tmp_path / "out"
    argv = toy_training_argv(
        tmp_path, out, f"--task={task}", "--number_of_epochs=6", "--batch_size=8", "--lr=0.005",
        n_per_speaker=16, dimensions=True,
    )  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "test_results.json").read_text())
    spec_ = json.loads((out / "model.json").read_text())
    assert spec_["task"] == task and spec_["dimensions"] == ["arousal", "valence", "dominance"]
    assert spec_["select_by"] == ("CCC" if task == "dimensional" else "UA")
    # arousal follows the class the toy features carry: learnt; dominance is noise
    assert res["test"]["dimensions"]["arousal"]["CCC"] > 0.5
    assert res["test"]["dimensions"]["dominance"]["n"] == 16 - len(range(0, 16, 7))  # every 7th unrated (spk0 rows)
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert [c for c in pred.columns if c.endswith("arousal")] == ["true_arousal", "pred_arousal"]
    assert (pred["true_dominance"] == "").sum() == 3
    if task == "dimensional":
        assert (
            "UA" not in res["test"]
            and (pred["predicted"] == "").all()
            and not any(pred.columns.str.startswith("prob_"))
        )
    else:
        assert res["test"]["UA"] > 0.5 and "valid_UA" in res and "valid_CCC" in res
    from cta_rnn.checkpoint import load_fold_model

    model, _ = load_fold_model(out)
    assert model.regressor is not None and torch.allclose(
        model.regressor.std,
        torch.tensor([spec_["dimension_stats"][d][1] for d in spec_["dimensions"]], dtype=torch.float32),
    )


def test_a_dimensional_task_without_the_columns_is_one_clear_error(tmp_path: Path, capsys) -> None:
    from cta_rnn.train import main

    argv = toy_training_argv(tmp_path, tmp_path / "out", "--task=both", "--number_of_epochs=1")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and err[-1].endswith(
        "fold1/train.csv: no column(s) ['arousal', 'valence', 'dominance'] for the dimensional task "
        "(rerun stage 0 to add them, or set 'dimensions')"
    )
    assert not (tmp_path / "out" / "save").exists() or not any((tmp_path / "out" / "save").iterdir())


def test_stage_5_on_a_dimensional_experiment_is_one_clear_error(tmp_path: Path) -> None:
    from cta_rnn.tune import fold_scores

    fold = tmp_path / "exp" / "fold1"
    fold.mkdir(parents=True)
    (fold / "test_results.json").write_text(json.dumps({"test": {"CCC": 0.5}, "valid_CCC": 0.4}))
    with pytest.raises(ValueError, match=r"fold1: no validation UA \(task dimensional\)"):
        fold_scores(tmp_path / "exp")
