"""Scoring of experiments (the library of stage 3, :mod:`cta_rnn.score`): per-fold and mean ± std WA / UA /
macro-F1 (and CCC / r / RMSE of dimensions), the experiment's results.json / results.md / plots, layer sweeps.

Reads ``exp/<tag>/fold<k>/predictions.csv`` (columns ``ID, true, predicted, prob_<label>...`` and
optionally ``att_layer<j>``) of every finished fold, and writes into ``exp/<tag>/``: ``results.json``,
``results.md``, ``scores_per_fold.csv``, ``confusion.png`` and ``channel_attention.png`` (also one per
fold). Re-scoring the same predictions gives identical files.

Predictions with dimensions (``true_<dim>``, ``pred_<dim>`` columns; task ``dimensional`` or ``both``) also get
CCC, Pearson r and RMSE per dimension and fold (utterances without a rating left out), their mean ± std over
folds, pooled values and ``scatter_dimensions.png`` (+ ``.csv``, the points drawn). A dimensional-only model
(empty ``predicted``, no ``prob_`` columns) has no WA / UA / F1: their values are None and no confusion is drawn.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import (
    PREDICTIONS,
    dimension_arrays,
    prediction_dimensions,
    read_available_folds,
    read_encoder_json,
    read_folds_list,
    read_label_encoder,
    read_predictions,
    read_results,
    write_results,
)
from .dimensional import dimension_scores, mean_ccc
from .io_utils import atomic_to_csv, atomic_write_text
from .metrics import SCORE_KEYS, aggregate_folds, classification_scores, mean_std
from .plots import plot_channel_attention, plot_confusion, plot_dimension_scatter, plot_layer_sweep
from .results_md import fmt_num, fmt_pct

logger = logging.getLogger(__name__)

LABEL_ENCODER = "label_encoder.txt"
FOLD_DIR = re.compile(r"^fold(\d+)$")
ATT_COL = re.compile(r"^att_layer(\d+)$")
DIM_METRICS = ("CCC", "r", "RMSE")
"""Per-dimension scores aggregated over folds (``n``, the rated utterances, is kept per fold and pooled)."""


def expected_fold_list(exp_dir: Path, expected: int | Sequence[int] | None) -> list[int] | None:
    """Expected fold numbers from the argument (K -> 1..K, or a list), else the experiment's folds.json, else None."""
    if expected is None:
        return read_folds_list(exp_dir)
    if isinstance(expected, int):
        return list(range(1, expected + 1))
    return sorted(int(k) for k in expected)


def find_folds(exp_dir: Path) -> tuple[dict[int, Path], list[int]]:
    """Finished folds (``fold<k>/predictions.csv`` exists) by number, and unfinished fold numbers."""
    done, unfinished = {}, []
    for d in sorted(exp_dir.iterdir()) if exp_dir.is_dir() else []:
        m = FOLD_DIR.match(d.name)
        if not (m and d.is_dir()):
            continue
        if (d / PREDICTIONS).is_file():
            done[int(m[1])] = d
        else:
            unfinished.append(int(m[1]))
    return dict(sorted(done.items())), sorted(unfinished)


def fold_labels(fold_dir: Path, df: pd.DataFrame) -> list[str]:
    """Label order: label_encoder.txt, else the prob_<label> columns, else sorted labels seen."""
    if (fold_dir / LABEL_ENCODER).is_file():
        return read_label_encoder(fold_dir / LABEL_ENCODER)
    probs = [c[5:] for c in df.columns if c.startswith("prob_")]
    return probs or sorted(set(df["true"]) | set(df["predicted"]))


def attention_matrix(df: pd.DataFrame) -> np.ndarray | None:
    """(N, L) channel attention from the ``att_layer<j>`` columns (ordered by j), or None."""
    cols = sorted((int(m[1]), c) for c in df.columns if (m := ATT_COL.match(c)))
    return df[[c for _, c in cols]].to_numpy(dtype=float) if cols else None


def has_class_predictions(df: pd.DataFrame, where: str | Path) -> bool:
    """True when ``predicted`` holds labels, False when it is empty throughout (a dimensional-only model)."""
    empty = df["predicted"].astype(str).str.strip() == ""
    if empty.all() and not prediction_dimensions(df):
        raise ValueError(f"{where}: no class prediction and no pred_<dimension> column: nothing to score")
    if empty.any() and not empty.all():
        raise ValueError(f"{where}: 'predicted' is empty on {int(empty.sum())} of {len(df)} rows (all or none)")
    return not empty.all()


def _finite(x: float) -> float | None:
    """A float, or None for NaN (undefined: fewer than two ratings, a constant side); JSON has no NaN."""
    return None if x is None or np.isnan(x) else float(x)


def dimensional_scores(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """``{"dimensional": {dim: {CCC, r, RMSE, n}}, "mean_CCC": ...}`` of (N, K) arrays (NaN true: no rating)."""
    scores = dimension_scores(true, pred, names)
    table = {d: {k: (v if k == "n" else _finite(v)) for k, v in s.items()} for d, s in scores.items()}
    return {"dimensional": table, "mean_CCC": _finite(mean_ccc(scores))}


def score_fold(fold_dir: str | Path, labels: Sequence[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Scores of one fold (``classification_scores`` plus ``fold``; ``dimensional`` and ``mean_CCC`` when the
    predictions have dimensions; only ``n`` of the categorical keys for a dimensional-only model) and its table."""
    fold_dir = Path(fold_dir)
    df = read_predictions(fold_dir)
    m = FOLD_DIR.match(fold_dir.name)
    scores: dict[str, Any] = {"fold": int(m[1]) if m else fold_dir.name}
    if has_class_predictions(df, fold_dir / PREDICTIONS):
        own = fold_labels(fold_dir, df)
        if labels is not None and set(own) != set(labels):
            raise ValueError(f"{fold_dir}: labels {own} differ from the other folds' {list(labels)}")
        labels = list(labels) if labels is not None else own
        unknown = sorted((set(df["true"]) | set(df["predicted"])) - set(labels))
        if unknown:
            raise ValueError(f"{fold_dir / PREDICTIONS}: labels {unknown} not in the label set {labels}")
        scores.update(classification_scores(df["true"].tolist(), df["predicted"].tolist(), labels))
    else:
        scores["n"] = len(df)
    dims = prediction_dimensions(df)
    if dims:
        scores.update(dimensional_scores(*dimension_arrays(df, dims, str(fold_dir / PREDICTIONS)), dims))
    return scores, df


def dimension_labels(fold_dir: Path, df: pd.DataFrame) -> list[str]:
    """Label set of a dimensional-only fold (not scored): label_encoder.txt, else the true labels seen."""
    if (fold_dir / LABEL_ENCODER).is_file():
        return read_label_encoder(fold_dir / LABEL_ENCODER)
    return sorted(set(df["true"].astype(str)) - {""})


def _outputs(scores: dict[str, Any]) -> str:
    """What a fold predicts, in words: classes or not, and its dimensions."""
    return f"{'classes' if 'wa' in scores else 'no classes'} and dimensions {list(scores.get('dimensional', {}))}"


def check_same_outputs(done: dict[int, Path], per_fold: Sequence[dict[str, Any]]) -> None:
    """Every fold predicts the same things: classes or not, and the same dimensions in the same order."""
    first = _outputs(per_fold[0])
    for d, f in zip(done.values(), per_fold):
        if _outputs(f) != first:
            raise ValueError(f"{d / PREDICTIONS}: predicts {_outputs(f)}, fold {per_fold[0]['fold']} {first}")


def aggregate_dimensions(per_fold: Sequence[dict[str, Any]], dims: Sequence[str], ddof: int = 1) -> dict[str, Any]:
    """Mean ± sample std over folds of CCC, r and RMSE per dimension and of the mean CCC (undefined values left out;
    ``{"mean": None, "std": None, "n": 0}`` when no fold has one)."""

    def agg(values: Sequence[float | None]) -> dict[str, Any]:
        kept = [v for v in values if v is not None]
        return mean_std(kept, ddof=ddof) if kept else {"mean": None, "std": None, "n": 0}

    out: dict[str, Any] = {d: {m: agg([f["dimensional"][d][m] for f in per_fold]) for m in DIM_METRICS} for d in dims}
    out["mean_CCC"] = agg([f["mean_CCC"] for f in per_fold])
    return out


def pooled_dimensional(frames: dict[int, pd.DataFrame], dims: Sequence[str]) -> dict[str, Any]:
    """CCC, r, RMSE and n per dimension over every fold's test predictions together, and their mean CCC."""
    true, pred = pooled_dimension_arrays(frames, dims)
    scores = dimensional_scores(true, pred, dims)
    return scores["dimensional"] | {"mean_CCC": scores["mean_CCC"]}


def pooled_dimension_arrays(frames: dict[int, pd.DataFrame], dims: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, pred) (N, K) of all folds in fold order (NaN: no rating)."""
    pairs = [dimension_arrays(df, dims, f"fold {k} {PREDICTIONS}") for k, df in frames.items()]
    return np.concatenate([t for t, _ in pairs]), np.concatenate([p for _, p in pairs])


def _round(obj: Any, nd: int = 6) -> Any:
    """Round every float in a nested structure (stable, readable JSON)."""
    if isinstance(obj, float):
        return round(obj, nd)
    if isinstance(obj, dict):
        return {k: _round(v, nd) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, nd) for v in obj]
    return obj


def score_experiment(
    exp_dir: str | Path,
    expected_folds: int | Sequence[int] | None = None,
    require_complete: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Score every finished fold of ``exp_dir``; write results.json/.md, CSV and plots there if ``write``.

    Folds expected (``expected_folds`` or ``folds.json``) but not finished are listed as missing and
    the result is marked partial; without an expected count, a ``fold<k>/`` without predictions counts as
    expected. Every fold with results is expected too, so ``k of n`` never has k > n; ``folds_available`` (the
    protocol's folds) tells a subset. ``require_complete`` turns missing folds into an error.
    """
    exp_dir = Path(exp_dir)
    done, unfinished = find_folds(exp_dir)
    expected = expected_fold_list(exp_dir, expected_folds)
    if expected is None and unfinished:  # a started but unfinished fold is expected too
        expected = sorted(set(done) | set(unfinished))
    if expected is not None:  # a fold with results is always counted (folds trained by runs folds.json missed)
        expected = sorted(set(expected) | set(done))
    missing = sorted(set(expected) - set(done)) if expected is not None else []
    if not done:
        raise FileNotFoundError(f"{exp_dir}: no finished fold (no fold<k>/{PREDICTIONS})")
    if require_complete and missing:
        raise RuntimeError(
            f"{exp_dir}: folds {missing} are not finished (drop --require_complete to score a partial set)"
        )
    per_fold, frames, labels = [], {}, None
    for k, d in done.items():
        scores, df = score_fold(d, labels)
        labels = labels or scores.get("labels")
        per_fold.append(scores)
        frames[k] = df
    check_same_outputs(done, per_fold)
    categorical = "wa" in per_fold[0]
    if categorical:
        pooled = pd.concat(frames.values(), ignore_index=True)
        pooled_scores = classification_scores(pooled["true"].tolist(), pooled["predicted"].tolist(), labels)
        agg = aggregate_folds(per_fold)
    else:  # a dimensional-only model: no class prediction, so no WA / UA / F1 (None) and no confusion
        first = next(iter(done))
        labels = dimension_labels(done[first], frames[first])
        pooled_scores = {"n": sum(f["n"] for f in per_fold), "recall": None} | {k: None for k in SCORE_KEYS}
        agg = {k: {"mean": None, "std": None, "n": 0} for k in SCORE_KEYS} | {"ddof": 1, "confusion": None}
    res = {
        "experiment": exp_dir.resolve().name,
        "labels": labels,
        "folds_scored": list(done),
        "folds_missing": missing,
        "folds_expected": expected,
        "partial": bool(expected is not None and missing),
        "folds_available": read_available_folds(exp_dir),
        "mean_std": {k: agg[k] for k in SCORE_KEYS} | {"ddof": agg["ddof"]},
        "confusion": agg["confusion"],
        "pooled": {k: pooled_scores[k] for k in ("n", "wa", "ua", "macro_f1", "recall")},
        "per_fold": per_fold,
        "encoder": read_encoder_json(exp_dir),
    }
    dims = list(per_fold[0].get("dimensional", {}))
    if dims:
        res |= {
            "task": "both" if categorical else "dimensional",
            "dimensions": dims,
            "mean_std_dimensional": aggregate_dimensions(per_fold, dims),
            "pooled_dimensional": pooled_dimensional(frames, dims),
        }
    res = _round(res)
    if write:
        write_experiment_outputs(exp_dir, res, frames)
    return res


def subset_of(res: dict[str, Any]) -> int | None:
    """How many folds the protocol has when fewer were scored (a subset), else None."""
    available = res.get("folds_available")
    return len(available) if available and len(res["folds_scored"]) < len(available) else None


def is_categorical(res: dict[str, Any]) -> bool:
    """Whether a scored experiment has class predictions (false only for a dimensional-only model)."""
    return res.get("task", "categorical") != "dimensional"


def fold_row(f: dict[str, Any], labels: Sequence[str], dims: Sequence[str]) -> dict[str, Any]:
    """One row of scores_per_fold.csv: fold, n, WA/UA/F1 and recalls (with classes), CCC/r/RMSE/n per dimension."""
    row = {"fold": f["fold"], "n": f["n"]}
    if "wa" in f:
        row |= {k: f[k] for k in SCORE_KEYS} | {f"recall_{lab}": f["recall"][lab] for lab in labels}
    for d in dims:
        row |= {f"{m.lower()}_{d}": f["dimensional"][d][m] for m in (*DIM_METRICS, "n")}
    return row | ({"mean_ccc": f["mean_CCC"]} if dims else {})


def write_scatter(exp_dir: Path, res: dict[str, Any], frames: dict[int, pd.DataFrame]) -> None:
    """``scatter_dimensions.png`` (+ ``.csv``): predicted vs true per dimension, every fold's test predictions."""
    dims = res["dimensions"]
    true, pred = pooled_dimension_arrays(frames, dims)
    folds = [k for k, df in frames.items() for _ in range(len(df))]
    ids = [i for df in frames.values() for i in df["ID"]]
    k = len(frames)
    plot_dimension_scatter(
        true,
        pred,
        dims,
        exp_dir / "scatter_dimensions.png",
        folds=folds,
        ids=ids,
        title=f"{res['experiment']}: test predictions of {k} fold{'s' * (k != 1)}",
    )


def write_experiment_outputs(exp_dir: Path, res: dict[str, Any], frames: dict[int, pd.DataFrame]) -> None:
    """results.json, results.md, scores_per_fold.csv, confusion.png, channel attention and dimension plots."""
    labels = res["labels"]
    write_results(exp_dir, res)
    rows = [fold_row(f, labels, res.get("dimensions", [])) for f in res["per_fold"]]
    atomic_to_csv(pd.DataFrame(rows), exp_dir / "scores_per_fold.csv")
    k = len(res["folds_scored"])
    if is_categorical(res):
        plot_confusion(
            res["confusion"],
            labels,
            exp_dir / "confusion.png",
            title=f"{res['experiment']}: summed over {k} fold{'s' * (k != 1)}",
        )
    if res.get("dimensions"):
        write_scatter(exp_dir, res, frames)
    atts = {fold: a for fold, df in frames.items() if (a := attention_matrix(df)) is not None}
    layer_ids = (res.get("encoder") or {}).get("layers")
    for fold, att in atts.items():
        ids = layer_ids if isinstance(layer_ids, list) and len(layer_ids) == att.shape[1] else None
        plot_channel_attention(
            att,
            frames[fold]["true"].tolist(),
            exp_dir / f"fold{fold}" / "channel_attention.png",
            label_order=labels,
            layer_ids=ids,
            title=f"{res['experiment']} fold {fold}",
        )
    has_att = bool(atts) and len(atts) == len(frames) and len({a.shape[1] for a in atts.values()}) == 1
    if has_att:
        att = np.concatenate(list(atts.values()))
        ids = layer_ids if isinstance(layer_ids, list) and len(layer_ids) == att.shape[1] else None
        true = [lab for df in frames.values() for lab in df["true"]]
        plot_channel_attention(
            att,
            true,
            exp_dir / "channel_attention.png",
            label_order=labels,
            layer_ids=ids,
            title=f"{res['experiment']}: channel attention, {k} fold{'s' * (k != 1)}",
        )
    atomic_write_text(exp_dir / "results.md", experiment_markdown(res, has_att))


def _status_line(res: dict[str, Any]) -> str:
    """'Folds scored: 1, 2 (2 folds).' with partial / missing / subset notes."""
    k = len(res["folds_scored"])
    status = f"{k} folds" if not res["partial"] else f"partial: {k} of {len(res['folds_expected'])} folds"
    if res["folds_missing"]:
        status += f"; missing: {', '.join(map(str, res['folds_missing']))}"
    if subset_of(res):
        status += f"; a SUBSET of the protocol's {subset_of(res)} folds, not comparable to an all-fold result"
    return f"Folds scored: {', '.join(map(str, res['folds_scored']))} ({status})."


def _fold_cells(res: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Columns of the fold table after Fold and #Utts: (header, a cell per fold then the mean ± std cell)."""
    cols = []
    if is_categorical(res):
        ms = res["mean_std"]
        for name, s in zip(("WA (%)", "UA (%)", "F1 (%)"), SCORE_KEYS):
            cells = [fmt_pct(f[s]) for f in res["per_fold"]] + [fmt_pct(ms[s]["mean"], ms[s]["std"])]
            cols.append((name, cells))
    if res.get("dimensions"):
        md = res["mean_std_dimensional"]
        for d in res["dimensions"]:
            cells = [fmt_num(f["dimensional"][d]["CCC"]) for f in res["per_fold"]]
            cols.append((f"CCC {d}", cells + [fmt_num(md[d]["CCC"]["mean"], md[d]["CCC"]["std"])]))
        cells = [fmt_num(f["mean_CCC"]) for f in res["per_fold"]]
        cols.append(("mean CCC", cells + [fmt_num(md["mean_CCC"]["mean"], md["mean_CCC"]["std"])]))
    return cols


def _fold_table(res: dict[str, Any]) -> list[str]:
    """Per-fold table: WA / UA / F1 (with classes) and CCC per dimension and their mean (with dimensions)."""
    cols = _fold_cells(res)
    out = ["| Fold | #Utts | " + " | ".join(h for h, _ in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    firsts = [(str(f["fold"]), str(f["n"])) for f in res["per_fold"]]
    firsts.append(("Mean ± std", str(sum(f["n"] for f in res["per_fold"]))))
    for i, (fold, n) in enumerate(firsts):
        out.append(f"| {fold} | {n} | " + " | ".join(c[i] for _, c in cols) + " |")
    return out


def _over_folds(agg: dict[str, Any], folds: int) -> str:
    """``mean ± std`` over folds, saying over how many when some fold had it undefined (e.g. a constant side)."""
    cell = fmt_num(agg["mean"], agg["std"])
    return cell if agg["n"] in (0, folds) else f"{cell} ({agg['n']} of {folds} folds)"


def dimensional_markdown(res: dict[str, Any]) -> list[str]:
    """Section of results.md on the dimensions: CCC / r / RMSE mean ± std over folds, pooled, scatter plot."""
    md, pooled = res["mean_std_dimensional"], res["pooled_dimensional"]
    out = [
        "## Dimensions: CCC, Pearson r, RMSE",
        "",
        "Mean ± std over folds, then pooled over all test utterances (all folds together); rated = utterances "
        "with a rating of that dimension (the others are left out). RMSE on the corpus's rating scale.",
        "",
        "| Dimension | CCC | r | RMSE | pooled CCC | pooled r | pooled RMSE | rated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    k = len(res["per_fold"])
    for d in res["dimensions"]:
        cells = [_over_folds(md[d][m], k) for m in DIM_METRICS]
        cells += [fmt_num(pooled[d][m]) for m in DIM_METRICS] + [str(pooled[d]["n"])]
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    out.append(f"| mean | {_over_folds(md['mean_CCC'], k)} | | | {fmt_num(pooled['mean_CCC'])} | | | |")
    return out + ["", "![predicted vs true per dimension](scatter_dimensions.png)"]


def categorical_markdown(res: dict[str, Any]) -> list[str]:
    """Pooled WA / UA / F1, recall per class and the summed confusion matrix of results.md."""
    labels, p = res["labels"], res["pooled"]
    pooled = ", ".join(f"{name} {fmt_pct(p[s])}" for name, s in zip(("WA", "UA", "F1"), SCORE_KEYS))
    out = ["", f"Pooled over all {p['n']} test utterances: {pooled}.", "", "## Recall per class (%)", ""]
    out += ["| Fold | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for f in res["per_fold"]:
        out.append(f"| {f['fold']} | " + " | ".join(fmt_pct(f["recall"][lab]) for lab in labels) + " |")
    out += ["", "## Confusion matrix, summed over folds (rows true, columns predicted)", ""]
    out += ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    out += [f"| {lab} | " + " | ".join(str(v) for v in row) + " |" for lab, row in zip(labels, res["confusion"])]
    return out + ["", "![confusion matrix](confusion.png)"]


def experiment_markdown(res: dict[str, Any], has_att: bool) -> str:
    """The experiment's results.md: fold table in the paper's format, recall per class, confusion; with dimensions
    also CCC per fold and a CCC / r / RMSE section (a dimensional-only model: no WA / UA / F1, said so)."""
    out = [f"# Results: {res['experiment']}", "", _status_line(res)]
    if is_categorical(res):
        out.append("WA = accuracy, UA = macro recall, F1 = macro-F1; mean ± sample std (ddof=1) over folds.")
    else:
        out.append(
            "No class predictions (a dimensional-only model, task dimensional): WA, UA, F1, recall per class and "
            "the confusion matrix are not computed."
        )
    if res.get("dimensions"):
        out.append(
            "CCC = concordance correlation coefficient of predicted and true ratings per dimension (utterances "
            "without a rating left out); mean ± sample std (ddof=1) over folds."
        )
    out += ["", *_fold_table(res)]
    if is_categorical(res):
        out += categorical_markdown(res)
    if res.get("dimensions"):
        out += ["", *dimensional_markdown(res)]
    if has_att:
        out += ["", "![channel attention per emotion](channel_attention.png)"]
    return "\n".join(out) + "\n"


def collect_layer_sweep(exp_dirs_by_layer: dict[int, str | Path], out_png: str | Path) -> dict[int, dict[str, Any]]:
    """Plot UA vs encoder layer from each experiment's results.json; also writes ``<out_png stem>.csv``.

    Layers whose experiment has no results.json yet are skipped with a warning.
    """
    points = {}
    for layer, d in sorted(exp_dirs_by_layer.items()):
        res = read_results(d)
        if res is None:
            logger.warning("layer %s: %s not found (score it first); skipped", layer, Path(d) / "results.json")
            continue
        points[int(layer)] = {
            "experiment": res["experiment"],
            "folds": len(res["folds_scored"]),
            **{f"{k}_{s}": res["mean_std"][k][s] for k in SCORE_KEYS for s in ("mean", "std")},
        }
    if not points:
        raise FileNotFoundError(f"no results.json in any of {[str(d) for d in exp_dirs_by_layer.values()]}")
    plot_layer_sweep(
        list(points), [p["ua_mean"] for p in points.values()], out_png, ua_std=[p["ua_std"] for p in points.values()]
    )
    table = pd.DataFrame([{"layer": k, **v} for k, v in points.items()])
    atomic_to_csv(table, Path(out_png).with_suffix(".csv"))
    return points


def summary_line(exp: Path, res: dict[str, Any]) -> str:
    """One console line of an experiment's scores: folds, WA / UA / F1 mean ± std, mean CCC when it has one."""
    ms, k = res["mean_std"], len(res["folds_scored"])
    note = f" (partial, missing folds {res['folds_missing']})" if res["partial"] else ""
    note += f" (subset of {subset_of(res)} folds)" if subset_of(res) else ""
    ccc = res.get("mean_std_dimensional", {}).get("mean_CCC")
    return (
        f"{exp}: {k} fold(s){note}  WA {fmt_pct(ms['wa']['mean'], ms['wa']['std'])}  "
        f"UA {fmt_pct(ms['ua']['mean'], ms['ua']['std'])}  "
        f"F1 {fmt_pct(ms['macro_f1']['mean'], ms['macro_f1']['std'])}"
        + (f"  mean CCC {fmt_num(ccc['mean'], ccc['std'])}" if ccc else "")
    )
