"""The recipe-level ``RESULTS.md``: generated from every ``exp/*/results.json``, with an environment block.

One source of truth: never edit RESULTS.md by hand; re-run scoring (``python -m cta_rnn.score``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from .artifacts import encoder_name
from .io_utils import atomic_write_text

PAPER_ROW = "CTA-RNN (paper, Chen & Zhang 2022)"
"""The reference row, left for a person to fill in from the paper (no number is invented here)."""

TO_FILL = "_to fill from paper_"
PAPER_ENCODER = "wenet_gigaspeech_u2pp (WeNet U2++ Conformer, GigaSpeech)"
"""The paper's encoder, by the name of its YAML (recipes/shared/hparams/encoder/), so a run can sit beside it."""
CCC_NOTE = [
    "CCC = concordance correlation coefficient of predicted and true dimension ratings: the mean over the",
    "dimensions (mean ± std over folds), then each dimension's mean over folds; '-' for a model without",
    "dimensions, '—' (WA / UA / F1) for a model without classes.",
]
"""Said under the table's legend only when some experiment has dimensions."""
VERSIONED_PACKAGES = ("torch", "torchaudio", "speechbrain", "transformers", "scikit-learn", "numpy")


def fmt_pct(mean: float | None, std: float | None = None) -> str:
    """``mean ± std`` of fractions as percentages with 2 decimals (std omitted when None)."""
    if mean is None:
        return "—"
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def fmt_num(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """``mean ± std`` of plain numbers (CCC, r, RMSE) with ``digits`` decimals; '—' when undefined (None)."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def ccc_cell(res: dict[str, Any]) -> str:
    """Mean CCC ± std over folds, then the mean CCC of each dimension: ``0.601 ± 0.020 (arousal 0.702, ...)``;
    '-' for an experiment without dimensions."""
    md = res.get("mean_std_dimensional")
    if not res.get("dimensions") or not md:
        return "-"
    per_dim = ", ".join(f"{d} {fmt_num(md[d]['CCC']['mean'])}" for d in res["dimensions"])
    return f"{fmt_num(md['mean_CCC']['mean'], md['mean_CCC']['std'])} ({per_dim})"


def folds_cell(res: dict[str, Any]) -> str:
    """'5', '3 of 5 (partial)' when expected folds are missing, '3 of 10 (subset)' for a fold subset."""
    k = len(res["folds_scored"])
    if res.get("partial"):
        return f"{k} of {len(res['folds_expected'])} (partial)"
    available = res.get("folds_available")
    if available and k < len(available):
        return f"{k} of {len(available)} (subset)"
    return str(k)


def encoder_cell(enc: dict[str, Any] | None) -> str:
    """Short encoder identity for the table (see artifacts.encoder_name)."""
    return encoder_name(enc)


def _git(root: Path, *args: str) -> str | None:
    """Output of a git command in ``root``, or None without git / outside a repository."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(pkg: str) -> str:
    """Installed version of ``pkg`` (without importing it), or 'not installed'."""
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def now_string() -> str:
    """UTC date and time; honours ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = _dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch else _dt.datetime.now(_dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def environment_block(root: Path) -> list[str]:
    """ESPnet-style environment lines: date, versions, git hash and commit date of ``root``'s repository."""
    lines = ["## Environment", "", f"- date: `{now_string()}`", f"- python version: `{platform.python_version()}`"]
    lines += [f"- {pkg} version: `{_version(pkg)}`" for pkg in VERSIONED_PACKAGES]
    lines.append(f"- cta_rnn version: `{_version('cta_rnn')}`")
    git_hash = _git(root, "rev-parse", "--short", "HEAD")
    lines.append(f"- git hash: `{git_hash or 'unknown (not a git checkout)'}`")
    if git_hash:
        lines.append(f"  - commit date: `{_git(root, 'log', '-1', '--format=%cd', '--date=iso-strict') or 'unknown'}`")
    return lines


def load_results(recipe_root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every ``<recipe_root>/exp/*/results.json``, sorted by experiment tag."""
    out = []
    for path in sorted(Path(recipe_root, "exp").glob("*/results.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        res.setdefault("experiment", path.parent.name)
        res["_dir"] = path.parent.name
        out.append(res)
    return sorted(out, key=lambda r: str(r["experiment"]))


def has_dimensions(results: list[dict[str, Any]]) -> bool:
    """Whether any scored experiment predicts dimensions (then the tables gain a CCC column)."""
    return any(res.get("dimensions") for res in results)


def results_table(results: list[dict[str, Any]]) -> list[str]:
    """The fixed-column table: paper reference row, then one row per scored experiment; a CCC column before
    Encoder only when some experiment has dimensions ('-' in the rows of those without)."""
    dims = has_dimensions(results)
    ccc_head, ccc_rule, ccc_paper = (" CCC (mean; per dimension) |", "---:|", " - |") if dims else ("", "", "")
    lines = [
        f"| Experiment | Folds | WA (%) | UA (%) | F1 (%) |{ccc_head} Encoder |",
        f"|---|---|---:|---:|---:|{ccc_rule}---|",
        f"| {PAPER_ROW} | {TO_FILL} | {TO_FILL} | {TO_FILL} | {TO_FILL} |{ccc_paper} {PAPER_ENCODER} |",
    ]
    for res in results:
        ms = res["mean_std"]
        cells = [fmt_pct(ms[k]["mean"], ms[k]["std"]) for k in ("wa", "ua", "macro_f1")]
        cells += [ccc_cell(res)] if dims else []
        tag = f"[{res['experiment']}](exp/{res['_dir']}/results.md)"
        lines.append(f"| {tag} | {folds_cell(res)} | {' | '.join(cells)} | {encoder_cell(res.get('encoder'))} |")
    return lines


def write_results_md(recipe_root: str | os.PathLike = ".") -> Path:
    """Regenerate ``<recipe_root>/RESULTS.md`` from every scored experiment and return its path."""
    root = Path(recipe_root)
    results = load_results(root)
    lines = [
        "<!-- Generated by `python -m cta_rnn.score` from exp/*/results.json: do not edit by hand. -->",
        "# RESULTS",
        "",
        *environment_block(root),
        "",
        "## Speech emotion recognition",
        "",
        "WA = accuracy, UA = macro-averaged recall, F1 = macro-F1; per test fold, then mean ± sample std",
        "(ddof=1) over folds. The paper row is left for a person to fill in from the paper.",
        *(CCC_NOTE if has_dimensions(results) else []),
        "",
        *results_table(results),
        "",
    ]
    encs = [r for r in results if r.get("encoder")]
    if encs:
        lines += ["## Encoders", ""]
        lines += [f"- {r['experiment']}: `{json.dumps(r['encoder'], sort_keys=True)}`" for r in encs]
        lines.append("")
    path = root / "RESULTS.md"
    atomic_write_text(path, "\n".join(lines))
    return path
