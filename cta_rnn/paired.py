"""Which parts of a model matter, with evidence: per-fold paired differences of variants to a reference.

Every variant (an ablation or a baseline) is trained on the same folds as the reference, so fold k of
both is tested on the same held-out speaker(s): the per-fold differences are paired. Reported per variant:
the difference of each fold's UA (variant - reference, in points), mean ± std, wins/ties/losses, the
two-sided Wilcoxon signed-rank p (scipy; zero differences split between the signs) and the exact
two-sided sign-test p (binomial on the non-zero differences).
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


def per_fold(exp_dir: Path, metric: str = "ua") -> dict[int, float]:
    """fold -> score of a scored experiment (its results.json)."""
    res = read_results(exp_dir)
    if res is None:
        raise FileNotFoundError(f"{Path(exp_dir) / 'results.json'}: not scored yet (run stage 3 for {exp_dir})")
    return {int(f["fold"]): float(f[metric]) for f in res["per_fold"]}


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


def _pts(x: float | None) -> str:
    """A difference of fractions in percentage points with its sign."""
    return "—" if x is None else f"{100 * x:+.1f}"


def paired_table(reference: Path, variants: Sequence[Path], metric: str = "ua") -> tuple[str, pd.DataFrame, dict]:
    """Markdown table, per-fold CSV rows and JSON of every variant against the reference."""
    ref = per_fold(reference, metric)
    rows, stats = [], {}
    for v in variants:
        s = compare(ref, per_fold(v, metric))
        stats[Path(v).name] = s
        rows += [{"variant": Path(v).name, "fold": k, "diff": d} for k, d in zip(s["folds"], s["diff"])]
    folds = sorted({k for s in stats.values() for k in s["folds"]})
    name = metric.upper()
    lines = [
        f"# Paired per-fold differences to `{Path(reference).name}` ({name}, percentage points)",
        "",
        f"Reference {name} per fold: " + ", ".join(f"{k}: {100 * ref[k]:.1f}" for k in sorted(ref)) + ".",
        "Each cell is variant minus reference on the same held-out fold; p-values are two-sided "
        "(Wilcoxon signed-rank, zero differences split; exact sign test).",
        "",
        "| variant | " + " | ".join(f"fold {k}" for k in folds) + " | mean ± std | W/T/L | Wilcoxon p | sign p |",
        "|---|" + "---:|" * len(folds) + "---:|---|---:|---:|",
    ]
    for v, s in stats.items():
        cells = [_pts(dict(zip(s["folds"], s["diff"])).get(k)) for k in folds]
        std = f" ± {100 * s['std']:.1f}" if s["std"] is not None else ""
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {_pts(s['mean'])}{std} | {s['wins']}/{s['ties']}/{s['losses']} "
            f"| {s['wilcoxon_p']:.3g} | {s['sign_p']:.3g} |"
        )
    return "\n".join(lines) + "\n", pd.DataFrame(rows), {"reference": Path(reference).name, "variants": stats}


def write_paired(reference: Path, variants: Sequence[Path], out_stem: Path, metric: str = "ua") -> str:
    """Write ``<out_stem>.md``, ``.csv`` and ``.json``; returns the Markdown."""
    md, rows, stats = paired_table(reference, variants, metric)
    atomic_write_text(Path(f"{out_stem}.md"), md)
    atomic_to_csv(rows, Path(f"{out_stem}.csv"))
    atomic_write_json(Path(f"{out_stem}.json"), stats)
    return md
