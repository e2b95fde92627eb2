"""Hyperparameter search on validation data only (stage 5 of the recipes).

    python -m cta_rnn.tune points hparams/tune.yaml [--train_yaml Y --store DIR -- TRAINING ARGS]
        # one "<tag>\\t<override>\\t<override>..." line per grid point, every point checked first
    python -m cta_rnn.tune select --out exp/tune_<exp> exp/<exp>_tune_<tag> ...

``hparams/tune.yaml`` declares the grid: ``grid: {key: [values, ...], ...}`` (every combination is trained
on the same folds). Values are read as the command line's overrides are (YAML 1.2: ``1e-3`` is a number), and
every point is checked as training will read it (schema, then the model it builds on the store) before the
first one trains. Each point's tag (its folder name) is unique: list items are joined with ``-``
(``layers0-12`` vs ``layers0-1-2``), and points whose tags would still collide get a hash of the point.

``select`` picks the point with the best mean *validation* UA over folds (each fold's
tested model, i.e. its best checkpoint or the average of its N best, as recorded in its test_results.json)
and only then reports that point's test UA; the other points' test scores are not shown, so they cannot steer
the choice. Folds that are fewer than the protocol's (``--folds``) are labelled a subset in the report.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cta_rnn.artifacts import read_available_folds, read_test_results
from cta_rnn.hparams_schema import (
    check_overrides,
    load_hparams,
    load_yaml_file,
    merge_overrides,
    model_spec,
    split_conf_args,
    yaml_keys,
)
from cta_rnn.io_utils import atomic_write_json, atomic_write_text, one_line

UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")
"""Characters left out of a tag (a folder name)."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def grid_points(tune_yaml: str | Path) -> list[dict[str, Any]]:
    """Every combination of the declared grid, in a stable order (values read as command-line overrides are)."""
    spec = load_yaml_file(tune_yaml) or {}
    grid = spec.get("grid") if isinstance(spec, dict) else None
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{tune_yaml}: expected `grid: {{key: [value, ...], ...}}` with non-empty lists")
    for key, values in grid.items():
        if not isinstance(key, str):
            raise ValueError(f"{tune_yaml}: grid key {key!r} is not a hyperparameter name")
        seen = [_canonical(v) for v in values]
        twice = next((v for v in seen if seen.count(v) > 1), None)
        if twice is not None:
            raise ValueError(f"{tune_yaml}: grid: {key} lists the value {twice} twice (one point, trained once)")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _text(value: Any) -> str:
    """A value in a tag: list items joined with ``-``, mappings as key+value, other characters dropped."""
    if isinstance(value, (list, tuple)):
        return "-".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "-".join(UNSAFE.sub("", str(k)) + _text(v) for k, v in value.items())
    return UNSAFE.sub("", str(value))


def point_tag(point: dict[str, Any]) -> str:
    """A folder-safe name of a grid point, e.g. ``lr0.002-max_train_seconds1.5`` (dict values by their keys,
    list items joined with ``-``: ``layers0-12``); :func:`point_tags` makes the tags of a grid unique."""
    flat = [(k2, v2) for k, v in point.items() for k2, v2 in (v.items() if isinstance(v, dict) else [(k, v)])]
    return "-".join(UNSAFE.sub("", str(k)) + _text(v) for k, v in flat)


def point_tags(points: Sequence[dict[str, Any]]) -> list[str]:
    """The tags of a grid's points, one folder each: points whose tags collide get ``-h`` + 6 hex of the point."""
    tags = [point_tag(p) for p in points]
    count = Counter(tags)
    tags = [
        t if count[t] == 1 else f"{t}-h{hashlib.sha1(_canonical(p).encode()).hexdigest()[:6]}"
        for t, p in zip(tags, points)
    ]
    clash = next((t for t, n in Counter(tags).items() if n > 1), None)
    if clash is not None:
        raise ValueError(f"two grid points get the folder tag {clash!r}; make their values differ")
    return tags


def point_args(point: dict[str, Any]) -> list[str]:
    """The point as training overrides, one argument each, values as JSON (valid YAML): ``--lr=0.002``."""
    return [f"--{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items()]


def point_overrides(point: dict[str, Any]) -> str:
    """The point's overrides on one line, e.g. ``--lr=0.002 --model_kwargs={"dropout":0.3}``."""
    return " ".join(point_args(point))


def check_points(
    points: Sequence[dict[str, Any]],
    train_yaml: str | Path,
    train_argv: Sequence[str] = (),
    store_dir: str | Path | None = None,
    where: str = "tune.yaml",
) -> None:
    """Every point read as its training will read it, before the first one trains.

    ``train_argv`` are the training arguments the points are added to (``--conf FILE`` and ``--key=value``).
    Each point's overrides are checked against the schema; with ``store_dir`` its hyperparameters are also
    loaded (the training YAML with every override) and its model built on that store (layers, model_kwargs).
    The first bad point is one line: ``<where>: point <i> of <n> (<overrides>): <problem>``.
    """
    import speechbrain as sb

    from cta_rnn.models import build_model
    from cta_rnn.store import EmbeddingStore, StoreError

    confs, rest = split_conf_args(list(train_argv))
    known = yaml_keys(train_yaml)
    stores: dict[str, EmbeddingStore] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, point in enumerate(points, 1):
            try:
                _, _, cli = sb.parse_arguments([str(train_yaml), *rest, *point_args(point)])
                overrides = merge_overrides(confs, cli)
                check_overrides(overrides, known)
                if store_dir is None:
                    continue
                paths = {"fold_dir": tmp, "store_dir": str(store_dir), "output_folder": tmp}
                hparams = load_hparams(str(train_yaml), {**overrides, **paths})
                layers = hparams.get("layers")
                if _canonical(layers) not in stores:
                    stores[_canonical(layers)] = EmbeddingStore(store_dir, layers=layers)
                build_model(model_spec(hparams, stores[_canonical(layers)]))
            except Exception as err:  # noqa: BLE001 - any failure of a point is reported as that point's
                raise ValueError(
                    f"{where}: point {i} of {len(points)} ({point_overrides(point)}): "
                    f"{one_line(err, (OSError, ValueError, StoreError))}"
                ) from None


def fold_scores(exp_dir: Path) -> dict[int, dict[str, float]]:
    """fold -> {valid_UA, test_UA} of every finished fold of an experiment."""
    out = {}
    for fold in sorted(Path(exp_dir).glob("fold*")):
        res = read_test_results(fold)
        if res is not None and fold.name[4:].isdigit():
            if "valid_UA" not in res:
                raise ValueError(
                    f"{fold}: no validation UA (task dimensional): stage 5 chooses by validation UA; "
                    "tune a task that has classes (categorical or both)"
                )
            out[int(fold.name[4:])] = {"valid_UA": float(res["valid_UA"]), "test_UA": float(res["test"]["UA"])}
    return out


def select(exps: Sequence[Path]) -> dict[str, Any]:
    """The point with the best mean validation UA over the folds all points finished; its test UA.

    ``folds_available`` are the protocol's folds (the experiments' ``folds.json``); ``subset`` is true when the
    selection covers fewer of them.
    """
    scores = {Path(e).name: fold_scores(Path(e)) for e in exps}
    common = sorted(set.intersection(*(set(s) for s in scores.values()))) if scores else []
    if not common:
        raise ValueError(f"no fold finished by every tuned experiment: {[str(e) for e in exps]}")
    available = sorted(set().union(*(read_available_folds(e) or [] for e in exps)))
    # rounded: equal per-fold scores summed in another order are a tie, not a float-noise win
    valid = {name: round(float(np.mean([s[k]["valid_UA"] for k in common])), 9) for name, s in scores.items()}
    best = max(valid, key=lambda n: (valid[n], -list(valid).index(n)))  # ties: the first declared point
    test = [scores[best][k]["test_UA"] for k in common]
    return {
        "folds": common,
        "folds_available": available,
        "subset": bool(set(available) - set(common)),
        "valid_UA": valid,
        "chosen": best,
        "test_UA_mean": float(np.mean(test)),
        "test_UA_std": float(np.std(test, ddof=1)) if len(test) > 1 else None,
        "test_UA_per_fold": dict(zip(common, test)),
    }


def selection_markdown(sel: dict[str, Any]) -> str:
    """The tuning report: validation UA of every point, test UA of the chosen one only; a fold subset labelled."""
    folds = ", ".join(map(str, sel["folds"]))
    scope = f"Folds {folds}"
    if sel.get("subset"):
        n = len(sel["folds_available"])
        scope = f"Folds {folds} ({len(sel['folds'])} of {n}: a SUBSET of the protocol's {n} folds)"
    lines = [
        "# Hyperparameter selection on validation data",
        "",
        f"{scope}; mean validation UA (the tested model of each fold).",
        "",
        "| point | mean valid UA (%) |",
        "|---|---:|",
    ]
    for name, ua in sel["valid_UA"].items():
        mark = " **(chosen)**" if name == sel["chosen"] else ""
        lines.append(f"| {name}{mark} | {100 * ua:.2f} |")
    std = f" ± {100 * sel['test_UA_std']:.2f}" if sel["test_UA_std"] is not None else ""
    where = " (on the fold subset above)" if sel.get("subset") else ""
    lines += ["", f"Test UA of the chosen point, reported once{where}: **{100 * sel['test_UA_mean']:.2f}{std}**."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    train_argv = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m cta_rnn.tune", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("points", help="check the grid points; print <tag> TAB <override> TAB ... per point")
    p.add_argument("tune_yaml")
    p.add_argument("--train_yaml", default=None, help="check every point against this training YAML")
    p.add_argument("--store", default=None, help="... and build its model on this embedding store")
    s = sub.add_parser("select", help="choose by validation UA, report the chosen point's test UA")
    s.add_argument("--out", required=True, help="output stem: <out>.md and <out>.json")
    s.add_argument("exps", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "points":
            points = grid_points(args.tune_yaml)
            tags = point_tags(points)
            if args.train_yaml:
                check_points(points, args.train_yaml, train_argv, args.store, where=args.tune_yaml)
            for tag, point in zip(tags, points):
                print("\t".join([tag, *point_args(point)]))
            return 0
        sel = select([Path(e) for e in args.exps])
    except (OSError, ValueError) as err:
        print(f"error: {one_line(err, (OSError, ValueError))}", file=sys.stderr)
        return 1
    md = selection_markdown(sel)
    atomic_write_text(Path(f"{args.out}.md"), md)
    atomic_write_json(Path(f"{args.out}.json"), sel)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
