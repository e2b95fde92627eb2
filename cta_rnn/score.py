"""Stage 3, scoring: per-fold and mean ± std WA / UA / macro-F1 of an experiment, plots, RESULTS.md.

Usage::

    python -m cta_rnn.score --exp exp/<tag> [--expected_folds K] [--recipe_root .] [--require_complete]
    python -m cta_rnn.score --sweep 0=exp/<tag_l0> --sweep 1=exp/<tag_l1> ... --sweep_png exp/layer_sweep.png

Reads ``exp/<tag>/fold<k>/predictions.csv`` (columns ``ID, true, predicted, prob_<label>...`` and
optionally ``att_layer<j>``) of every finished fold, and writes into ``exp/<tag>/``: ``results.json``,
``results.md``, ``scores_per_fold.csv``, ``confusion.png`` and ``channel_attention.png`` (also one per
fold), then regenerates ``<recipe_root>/RESULTS.md``. Re-scoring the same predictions gives identical
files (RESULTS.md differs only in its date line).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .artifacts import (
    PREDICTIONS,
    read_available_folds,
    read_encoder_json,
    read_folds_list,
    read_label_encoder,
    read_predictions,
    read_results,
    write_results,
)
from .io_utils import atomic_to_csv, atomic_write_text
from .metrics import SCORE_KEYS, aggregate_folds, classification_scores
from .plots import plot_channel_attention, plot_confusion, plot_layer_sweep
from .results_md import fmt_pct, write_results_md

logger = logging.getLogger(__name__)

LABEL_ENCODER = "label_encoder.txt"
FOLD_DIR = re.compile(r"^fold(\d+)$")
ATT_COL = re.compile(r"^att_layer(\d+)$")

__all__ = ["collect_layer_sweep", "main", "score_experiment", "score_fold", "write_results_md"]


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


def score_fold(fold_dir: str | Path, labels: Sequence[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Scores of one fold (``classification_scores`` plus ``fold``) and its predictions table."""
    fold_dir = Path(fold_dir)
    df = read_predictions(fold_dir)
    own = fold_labels(fold_dir, df)
    if labels is not None and set(own) != set(labels):
        raise ValueError(f"{fold_dir}: labels {own} differ from the other folds' {list(labels)}")
    labels = list(labels) if labels is not None else own
    unknown = sorted((set(df["true"]) | set(df["predicted"])) - set(labels))
    if unknown:
        raise ValueError(f"{fold_dir / PREDICTIONS}: labels {unknown} not in the label set {labels}")
    m = FOLD_DIR.match(fold_dir.name)
    scores = {"fold": int(m[1]) if m else fold_dir.name}
    scores.update(classification_scores(df["true"].tolist(), df["predicted"].tolist(), labels))
    return scores, df


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
        labels = labels or scores["labels"]
        per_fold.append(scores)
        frames[k] = df
    pooled = pd.concat(frames.values(), ignore_index=True)
    pooled_scores = classification_scores(pooled["true"].tolist(), pooled["predicted"].tolist(), labels)
    agg = aggregate_folds(per_fold)
    res = _round(
        {
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
    )
    if write:
        write_experiment_outputs(exp_dir, res, frames)
    return res


def subset_of(res: dict[str, Any]) -> int | None:
    """How many folds the protocol has when fewer were scored (a subset), else None."""
    available = res.get("folds_available")
    return len(available) if available and len(res["folds_scored"]) < len(available) else None


def write_experiment_outputs(exp_dir: Path, res: dict[str, Any], frames: dict[int, pd.DataFrame]) -> None:
    """results.json, results.md, scores_per_fold.csv, confusion.png and channel attention plots."""
    labels = res["labels"]
    write_results(exp_dir, res)
    rows = [
        {
            "fold": f["fold"],
            "n": f["n"],
            **{k: f[k] for k in SCORE_KEYS},
            **{f"recall_{lab}": f["recall"][lab] for lab in labels},
        }
        for f in res["per_fold"]
    ]
    atomic_to_csv(pd.DataFrame(rows), exp_dir / "scores_per_fold.csv")
    k = len(res["folds_scored"])
    plot_confusion(
        res["confusion"],
        labels,
        exp_dir / "confusion.png",
        title=f"{res['experiment']}: summed over {k} fold{'s' * (k != 1)}",
    )
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


def experiment_markdown(res: dict[str, Any], has_att: bool) -> str:
    """The experiment's results.md: fold table in the paper's format, recall per class, confusion."""
    labels, ms, k = res["labels"], res["mean_std"], len(res["folds_scored"])
    status = f"{k} folds" if not res["partial"] else f"partial: {k} of {len(res['folds_expected'])} folds"
    if res["folds_missing"]:
        status += f"; missing: {', '.join(map(str, res['folds_missing']))}"
    if subset_of(res):
        status += f"; a SUBSET of the protocol's {subset_of(res)} folds, not comparable to an all-fold result"
    scored = ", ".join(map(str, res["folds_scored"]))
    out = [
        f"# Results: {res['experiment']}",
        "",
        f"Folds scored: {scored} ({status}).",
        "WA = accuracy, UA = macro recall, F1 = macro-F1; mean ± sample std (ddof=1) over folds.",
        "",
        "| Fold | #Utts | WA (%) | UA (%) | F1 (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in res["per_fold"]:
        out.append(f"| {f['fold']} | {f['n']} | " + " | ".join(fmt_pct(f[s]) for s in SCORE_KEYS) + " |")
    total = sum(f["n"] for f in res["per_fold"])
    means = " | ".join(fmt_pct(ms[s]["mean"], ms[s]["std"]) for s in SCORE_KEYS)
    out.append(f"| Mean ± std | {total} | {means} |")
    p = res["pooled"]
    pooled = ", ".join(f"{name} {fmt_pct(p[s])}" for name, s in zip(("WA", "UA", "F1"), SCORE_KEYS))
    out += ["", f"Pooled over all {p['n']} test utterances: {pooled}.", "", "## Recall per class (%)", ""]
    out += ["| Fold | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for f in res["per_fold"]:
        out.append(f"| {f['fold']} | " + " | ".join(fmt_pct(f["recall"][lab]) for lab in labels) + " |")
    out += ["", "## Confusion matrix, summed over folds (rows true, columns predicted)", ""]
    out += ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    out += [f"| {lab} | " + " | ".join(str(v) for v in row) + " |" for lab, row in zip(labels, res["confusion"])]
    out += ["", "![confusion matrix](confusion.png)"]
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


def _parse_sweep(items: Sequence[str]) -> dict[int, Path]:
    """``LAYER=EXP_DIR`` strings to a dict."""
    out = {}
    for it in items:
        layer, sep, d = it.partition("=")
        if not sep or not layer.lstrip("-").isdigit():
            raise SystemExit(f"--sweep expects LAYER=EXP_DIR, got {it!r}")
        out[int(layer)] = Path(d)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``python -m cta_rnn.score``)."""
    ap = argparse.ArgumentParser(prog="python -m cta_rnn.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", nargs="+", default=[], help="experiment folder(s) exp/<tag> holding fold<k>/")
    ap.add_argument("--expected_folds", type=int, default=None, help="K: folds 1..K are expected (else folds.json)")
    ap.add_argument("--require_complete", action="store_true", help="fail if an expected fold is not finished")
    ap.add_argument("--recipe_root", default=None, help="where RESULTS.md goes (default: the folder above exp/)")
    ap.add_argument("--no_results_md", action="store_true", help="do not regenerate RESULTS.md")
    ap.add_argument("--sweep", nargs="+", default=[], metavar="LAYER=EXP_DIR", help="single-layer sweep points")
    ap.add_argument("--sweep_png", default="exp/layer_sweep.png", help="output of the layer sweep plot")
    ap.add_argument("--paired", nargs="+", default=[], metavar="EXP", help="reference experiment, then variants")
    ap.add_argument("--paired_out", default="exp/ablations", help="<stem>.md/.csv/.json of --paired")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not args.exp and not args.sweep and not args.paired:
        ap.error("give --exp, --sweep and/or --paired")
    if len(args.paired) == 1:
        ap.error("--paired needs a reference experiment and at least one variant")
    roots = set()
    for exp in map(Path, args.exp):
        res = score_experiment(exp, args.expected_folds, args.require_complete)
        ms, k = res["mean_std"], len(res["folds_scored"])
        note = f" (partial, missing folds {res['folds_missing']})" if res["partial"] else ""
        note += f" (subset of {subset_of(res)} folds)" if subset_of(res) else ""
        print(
            f"{exp}: {k} fold(s){note}  WA {fmt_pct(ms['wa']['mean'], ms['wa']['std'])}  "
            f"UA {fmt_pct(ms['ua']['mean'], ms['ua']['std'])}  "
            f"F1 {fmt_pct(ms['macro_f1']['mean'], ms['macro_f1']['std'])}"
        )
        absexp = exp.resolve()
        roots.add(
            Path(args.recipe_root)
            if args.recipe_root
            else absexp.parent.parent
            if absexp.parent.name == "exp"
            else Path(".")
        )
    if args.sweep:
        points = collect_layer_sweep(_parse_sweep(args.sweep), args.sweep_png)
        print(f"layer sweep ({len(points)} layers) -> {args.sweep_png}")
    if args.paired:
        from .paired import write_paired

        print(write_paired(Path(args.paired[0]), [Path(p) for p in args.paired[1:]], Path(args.paired_out)))
    if not args.no_results_md:
        for root in sorted(roots):
            print(f"wrote {write_results_md(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
