"""Stage 0, data preparation: a corpus tree -> ``<out>/manifest.csv`` + fold lists, after the count checks.

    python -m cta_rnn.prepare {iemocap,msp_improv,manifest,custom} --root ROOT --out data/ [--allow_partial]
        [--conditions T,R,S,P] [--protocols loso_session,loso_speaker,given]

Writes ``<out>/manifest.csv``, ``<out>/prepare.json`` (what defined it) and
``<out>/folds/<protocol>/fold<k>/{train,valid,test}.csv`` with ``folds.json``. Nothing is written when a check
fails; errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from cta_rnn.artifacts import MANIFEST_COLUMNS, read_manifest
from cta_rnn.corpora.custom import prepare_custom
from cta_rnn.corpora.folds import ALL_PROTOCOLS, PROTOCOLS, make_folds, write_folds
from cta_rnn.corpora.iemocap import prepare_iemocap
from cta_rnn.corpora.msp_improv import prepare_msp_improv
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json


def prepare_from_manifest(root: str | Path, allow_partial: bool = False, conditions=None, log=print) -> pd.DataFrame:
    """An existing manifest CSV (e.g. the synthesised mini corpus) -> checked manifest for the folds."""
    del allow_partial, log
    manifest = read_manifest(root, required=MANIFEST_COLUMNS)
    if conditions:
        manifest = manifest[manifest["condition"].astype(str).isin(conditions)].reset_index(drop=True)
    return manifest


PREPARERS: dict[str, Callable[..., pd.DataFrame]] = {
    "iemocap": prepare_iemocap,
    "msp_improv": prepare_msp_improv,
    "manifest": prepare_from_manifest,
    "custom": prepare_custom,
}


def _csv_list(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; empty or None -> None."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or None


def prepare(
    corpus: str,
    root: str | Path,
    out: str | Path,
    allow_partial: bool = False,
    conditions: Sequence[str] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Build, check and write the manifest of ``corpus`` and its fold lists; return the manifest."""
    if corpus not in PREPARERS:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {sorted(PREPARERS)}")
    bad = [p for p in protocols if p not in ALL_PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocol(s) {bad}; choose from {ALL_PROTOCOLS}")
    manifest = PREPARERS[corpus](root, allow_partial=allow_partial, conditions=conditions, log=log)
    if manifest.empty:
        raise ValueError(f"{corpus}: no utterance kept from {root}")
    folds = {p: make_folds(manifest, p) for p in protocols}  # fail before writing anything
    out = Path(out)
    atomic_to_csv(manifest, out / "manifest.csv")
    atomic_write_json(
        out / "prepare.json",
        {
            "corpus": corpus,
            "root": str(Path(root).resolve()),
            "allow_partial": allow_partial,
            "conditions": list(conditions) if conditions else None,
            "protocols": list(protocols),
            "n_utterances": len(manifest),
            "speakers": sorted(manifest["speaker"].unique().tolist()),
        },
    )
    log(f"{corpus}: wrote {out / 'manifest.csv'} ({len(manifest)} utterances)")
    for p in protocols:
        write_folds(manifest, p, out, log=log, made=folds[p])
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m cta_rnn.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("corpus", choices=sorted(PREPARERS))
    ap.add_argument("--root", required=True, help="corpus root, or a manifest CSV for 'manifest'")
    ap.add_argument("--out", required=True, help="output folder, e.g. data/")
    ap.add_argument("--allow_partial", action="store_true", help="warn instead of failing on count mismatches")
    ap.add_argument("--conditions", default=None, help="subset: T,R,S,P (MSP-IMPROV) or impro,script (IEMOCAP)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma list of fold protocols (or 'none')")
    args = ap.parse_args(argv)
    protocols = [] if args.protocols.strip().lower() == "none" else _csv_list(args.protocols) or []
    try:
        prepare(args.corpus, args.root, args.out, args.allow_partial, _csv_list(args.conditions), protocols)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
