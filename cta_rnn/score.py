"""Stage 3, scoring: per-fold and mean ± std WA / UA / macro-F1 (and CCC / r / RMSE of dimensions) of an experiment.

Usage::

    python -m cta_rnn.score --exp exp/<tag> [--expected_folds K] [--recipe_root .] [--require_complete]
    python -m cta_rnn.score --sweep 0=exp/<tag_l0> --sweep 1=exp/<tag_l1> ... --sweep_png exp/layer_sweep.png
    python -m cta_rnn.score --paired exp/<ref> exp/<variant> ... --paired_out exp/ablations [--paired_metric ccc]

Reads ``exp/<tag>/fold<k>/predictions.csv`` (columns ``ID, true, predicted, prob_<label>...`` and
optionally ``att_layer<j>``) of every finished fold, and writes into ``exp/<tag>/``: ``results.json``,
``results.md``, ``scores_per_fold.csv``, ``confusion.png`` and ``channel_attention.png`` (also one per
fold), then regenerates ``<recipe_root>/RESULTS.md``. Re-scoring the same predictions gives identical
files (RESULTS.md differs only in its date line).

Predictions with dimensions (``true_<dim>``, ``pred_<dim>`` columns; task ``dimensional`` or ``both``) also get
CCC, Pearson r and RMSE per dimension and fold (utterances without a rating left out), their mean ± std over
folds, pooled values and ``scatter_dimensions.png`` (+ ``.csv``, the points drawn). A dimensional-only model
(empty ``predicted``, no ``prob_`` columns) has no WA / UA / F1: their values are None and no confusion is drawn.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cta_rnn.paired import check_metric, write_paired
from cta_rnn.results_md import write_results_md
from cta_rnn.scoring import collect_layer_sweep, score_experiment, summary_line


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
    ap.add_argument(
        "--paired_metric",
        "--metric",
        default="ua",
        help="per-fold score --paired compares: ua (default), wa, macro_f1, ccc (mean CCC over dimensions), ccc_<dim>",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not args.exp and not args.sweep and not args.paired:
        ap.error("give --exp, --sweep and/or --paired")
    if len(args.paired) == 1:
        ap.error("--paired needs a reference experiment and at least one variant")
    roots = set()
    for exp in map(Path, args.exp):
        print(summary_line(exp, score_experiment(exp, args.expected_folds, args.require_complete)))
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
        try:
            check_metric(args.paired_metric)
        except ValueError as err:
            ap.error(str(err))
        variants = [Path(p) for p in args.paired[1:]]
        print(write_paired(Path(args.paired[0]), variants, Path(args.paired_out), args.paired_metric))
    if not args.no_results_md:
        for root in sorted(roots):
            print(f"wrote {write_results_md(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
