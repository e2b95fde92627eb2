"""Hyperparameter search on validation data only (stage 5 of the recipes).

    python -m cta_rnn.tune points hparams/tune.yaml            # one "<tag>\\t<overrides>" line per grid point
    python -m cta_rnn.tune select --out exp/tune_<exp> exp/<exp>_tune_<tag> ...

``hparams/tune.yaml`` declares the grid: ``grid: {key: [values, ...], ...}`` (every combination is trained
on the same folds). ``select`` picks the point with the best mean *validation* UA over folds (each fold's
tested model, i.e. its best checkpoint or the average of its N best, as recorded in its test_results.json)
and only then reports that point's test UA; the other points' test scores are not shown, so they cannot steer
the choice.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cta_rnn.artifacts import read_test_results
from cta_rnn.io_utils import atomic_write_json, atomic_write_text


def grid_points(tune_yaml: str | Path) -> list[dict[str, Any]]:
    """Every combination of the declared grid, in a stable order."""
    spec = yaml.safe_load(Path(tune_yaml).read_text(encoding="utf-8")) or {}
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{tune_yaml}: expected `grid: {{key: [value, ...], ...}}` with non-empty lists")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_tag(point: dict[str, Any]) -> str:
    """A folder-safe name of a grid point, e.g. ``lr0.002-max_train_seconds1.5`` (dict values by their keys)."""
    flat = [(k2, v2) for k, v in point.items() for k2, v2 in (v.items() if isinstance(v, dict) else [(k, v)])]
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "", f"{k}{v}") for k, v in flat)


def point_overrides(point: dict[str, Any]) -> str:
    """The point as training overrides without spaces (the driver splits on them), values as JSON (valid YAML):
    e.g. ``--lr=0.002 --model_kwargs={"dropout":0.3}``."""
    return " ".join(f"--{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items())


def fold_scores(exp_dir: Path) -> dict[int, dict[str, float]]:
    """fold -> {valid_UA, test_UA} of every finished fold of an experiment."""
    out = {}
    for fold in sorted(Path(exp_dir).glob("fold*")):
        res = read_test_results(fold)
        if res is not None and fold.name[4:].isdigit():
            out[int(fold.name[4:])] = {"valid_UA": float(res["valid_UA"]), "test_UA": float(res["test"]["UA"])}
    return out


def select(exps: Sequence[Path]) -> dict[str, Any]:
    """The point with the best mean validation UA over the folds all points finished; its test UA."""
    scores = {Path(e).name: fold_scores(Path(e)) for e in exps}
    common = sorted(set.intersection(*(set(s) for s in scores.values()))) if scores else []
    if not common:
        raise ValueError(f"no fold finished by every tuned experiment: {[str(e) for e in exps]}")
    # rounded: equal per-fold scores summed in another order are a tie, not a float-noise win
    valid = {name: round(float(np.mean([s[k]["valid_UA"] for k in common])), 9) for name, s in scores.items()}
    best = max(valid, key=lambda n: (valid[n], -list(valid).index(n)))  # ties: the first declared point
    test = [scores[best][k]["test_UA"] for k in common]
    return {
        "folds": common,
        "valid_UA": valid,
        "chosen": best,
        "test_UA_mean": float(np.mean(test)),
        "test_UA_std": float(np.std(test, ddof=1)) if len(test) > 1 else None,
        "test_UA_per_fold": dict(zip(common, test)),
    }


def selection_markdown(sel: dict[str, Any]) -> str:
    """The tuning report: validation UA of every point, test UA of the chosen one only."""
    lines = [
        "# Hyperparameter selection on validation data",
        "",
        f"Folds {', '.join(map(str, sel['folds']))}; mean validation UA (the tested model of each fold).",
        "",
        "| point | mean valid UA (%) |",
        "|---|---:|",
    ]
    for name, ua in sel["valid_UA"].items():
        mark = " **(chosen)**" if name == sel["chosen"] else ""
        lines.append(f"| {name}{mark} | {100 * ua:.2f} |")
    std = f" ± {100 * sel['test_UA_std']:.2f}" if sel["test_UA_std"] is not None else ""
    lines += ["", f"Test UA of the chosen point, reported once: **{100 * sel['test_UA_mean']:.2f}{std}**."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m cta_rnn.tune", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("points", help="print the grid points: <tag> TAB <overrides>")
    p.add_argument("tune_yaml")
    s = sub.add_parser("select", help="choose by validation UA, report the chosen point's test UA")
    s.add_argument("--out", required=True, help="output stem: <out>.md and <out>.json")
    s.add_argument("exps", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "points":
            for point in grid_points(args.tune_yaml):
                print(f"{point_tag(point)}\t{point_overrides(point)}")
            return 0
        sel = select([Path(e) for e in args.exps])
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    md = selection_markdown(sel)
    atomic_write_text(Path(f"{args.out}.md"), md)
    atomic_write_json(Path(f"{args.out}.json"), sel)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
