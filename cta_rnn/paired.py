"""Which parts of a model matter, with evidence: per-fold paired differences of variants to a reference.

Every variant (an ablation or a baseline) is trained on the same folds as the reference, so fold k of
both is tested on the same held-out speaker(s): the per-fold differences are paired. Reported per variant:
the difference of each fold's UA (variant - reference, in points), mean ± std, wins/ties/losses, the
two-sided Wilcoxon signed-rank p (scipy; zero differences split between the signs) and the exact
two-sided sign-test p (binomial on the non-zero differences).

The metric may also be WA or macro-F1 (points), or, for models with dimensions, ``ccc`` (the mean CCC over the
dimensions) or ``ccc_<dim>`` (e.g. ``ccc_arousal``): CCC differences are plain numbers with 3 decimals. A fold
whose CCC is undefined (fewer than two ratings) is left out of the pairs.

    python -m cta_rnn.score --paired exp/<reference> exp/<variant> [...] --paired_out exp/ablations \
        [--paired_metric ccc_arousal]       # stage 4 runs it
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, wilcoxon

from cta_rnn.artifacts import read_results
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json, atomic_write_text

CLASS_METRICS = ("ua", "wa", "macro_f1")
"""Per-fold categorical scores (fractions; differences in percentage points)."""


def is_ccc(metric: str) -> bool:
    """Whether ``metric`` is a CCC (``ccc`` or ``ccc_<dim>``)."""
    return metric == "ccc" or metric.startswith("ccc_")


def check_metric(metric: str) -> str:
    """``metric`` if it is ua, wa, macro_f1, ccc or ccc_<dim>; else a ValueError saying what is accepted."""
    if metric in CLASS_METRICS or metric == "ccc" or (metric.startswith("ccc_") and len(metric) > 4):
        return metric
    raise ValueError(f"metric {metric!r}: expected one of {', '.join(CLASS_METRICS)}, ccc, ccc_<dimension>")


def metric_name(metric: str) -> str:
    """Display name: UA, WA, MACRO_F1, mean CCC, CCC arousal."""
    if metric == "ccc":
        return "mean CCC"
    return f"CCC {metric[4:]}" if is_ccc(metric) else metric.upper()


def fold_value(fold: dict[str, Any], metric: str, where: Path) -> float | None:
    """The ``metric`` of one per-fold entry of results.json (None: undefined there); a missing one is an error."""
    if not is_ccc(metric):
        if metric not in fold:
            raise ValueError(f"{where}: no {metric_name(metric)} per fold (a dimensional-only model?); use ccc")
        return fold[metric]
    table = fold.get("dimensional")
    if table is None:
        raise ValueError(f"{where}: no dimensions per fold (score it again, or compare {', '.join(CLASS_METRICS)})")
    if metric == "ccc":
        return fold["mean_CCC"]
    if metric[4:] not in table:
        raise ValueError(f"{where}: no dimension {metric[4:]!r} (has {', '.join(table)})")
    return table[metric[4:]]["CCC"]


def per_fold(exp_dir: Path, metric: str = "ua") -> dict[int, float]:
    """fold -> score of a scored experiment (its results.json); folds where the score is undefined are left out."""
    res = read_results(exp_dir)
    path = Path(exp_dir) / "results.json"
    if res is None:
        raise FileNotFoundError(f"{path}: not scored yet (run stage 3 for {exp_dir})")
    values = {int(f["fold"]): fold_value(f, check_metric(metric), path) for f in res["per_fold"]}
    return {k: float(v) for k, v in values.items() if v is not None}


def compare(reference: dict[int, float], variant: dict[int, float]) -> dict[str, Any]:
    """Paired statistics of ``variant - reference`` over their common folds."""
    folds = sorted(set(reference) & set(variant))
    if not folds:
        raise ValueError("no fold in common")
    diff = np.array([variant[k] - reference[k] for k in folds])
    nonzero = diff[diff != 0]
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    wil = wilcoxon(diff, zero_method="zsplit").pvalue if len(nonzero) else 1.0
    sign = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    return {
        "folds": folds,
        "diff": diff.tolist(),
        "mean": float(diff.mean()),
        "std": float(diff.std(ddof=1)) if len(diff) > 1 else None,
        "wins": wins,
        "ties": len(folds) - wins - losses,
        "losses": losses,
        "wilcoxon_p": float(wil),
        "sign_p": float(sign),
    }


def _scale(metric: str) -> tuple[float, int, str]:
    """Factor, decimals and unit of a metric's values in the table: fractions in points, CCC as it is."""
    return (1.0, 3, "differences in CCC") if is_ccc(metric) else (100.0, 1, "percentage points")


def _pts(x: float | None, metric: str = "ua") -> str:
    """A difference with its sign: of fractions in percentage points, of CCCs with 3 decimals."""
    factor, digits, _ = _scale(metric)
    return "—" if x is None else f"{factor * x:+.{digits}f}"


def paired_table(reference: Path, variants: Sequence[Path], metric: str = "ua") -> tuple[str, pd.DataFrame, dict]:
    """Markdown table, per-fold CSV rows and JSON of every variant against the reference."""
    ref = per_fold(reference, metric)
    rows, stats = [], {}
    for v in variants:
        s = compare(ref, per_fold(v, metric))
        stats[Path(v).name] = s
        rows += [{"variant": Path(v).name, "fold": k, "diff": d} for k, d in zip(s["folds"], s["diff"])]
    folds = sorted({k for s in stats.values() for k in s["folds"]})
    name, (factor, digits, unit) = metric_name(metric), _scale(metric)
    lines = [
        f"# Paired per-fold differences to `{Path(reference).name}` ({name}, {unit})",
        "",
        f"Reference {name} per fold: " + ", ".join(f"{k}: {factor * ref[k]:.{digits}f}" for k in sorted(ref)) + ".",
        "Each cell is variant minus reference on the same held-out fold; p-values are two-sided "
        "(Wilcoxon signed-rank, zero differences split; exact sign test).",
        "",
        "| variant | " + " | ".join(f"fold {k}" for k in folds) + " | mean ± std | W/T/L | Wilcoxon p | sign p |",
        "|---|" + "---:|" * len(folds) + "---:|---|---:|---:|",
    ]
    for v, s in stats.items():
        cells = [_pts(dict(zip(s["folds"], s["diff"])).get(k), metric) for k in folds]
        mean = _pts(s["mean"], metric) + (f" ± {factor * s['std']:.{digits}f}" if s["std"] is not None else "")
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {mean} | {s['wins']}/{s['ties']}/{s['losses']} "
            f"| {s['wilcoxon_p']:.3g} | {s['sign_p']:.3g} |"
        )
    doc = {"reference": Path(reference).name} | ({"metric": metric} if metric != "ua" else {}) | {"variants": stats}
    return "\n".join(lines) + "\n", pd.DataFrame(rows), doc


def write_paired(reference: Path, variants: Sequence[Path], out_stem: Path, metric: str = "ua") -> str:
    """Write ``<out_stem>.md``, ``.csv`` and ``.json``; returns the Markdown."""
    md, rows, stats = paired_table(reference, variants, metric)
    atomic_write_text(Path(f"{out_stem}.md"), md)
    atomic_to_csv(rows, Path(f"{out_stem}.csv"))
    atomic_write_json(Path(f"{out_stem}.json"), stats)
    return md
