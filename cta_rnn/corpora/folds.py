"""Speaker-independent fold protocols over any manifest with ``speaker`` and ``session`` columns.

- ``loso_session``: one fold per session (sorted); test = that session; valid = the session before it
  (cyclic: fold 1 validates on the last session), so validation is speaker-disjoint from train and test;
  train = the other sessions. Needs at least 3 sessions.
- ``loso_speaker``: one fold per speaker, sorted by (session, speaker); test = that speaker; valid = the other
  speaker(s) of the same session (the paper's rule); a speaker alone in its session validates on the next
  speaker in that order (cyclic); train = everyone else. Needs at least 3 speakers.
- ``given``: one fold from the manifest's ``split`` column (train/valid/test, e.g. a user-given split of a
  custom corpus). Each split must be non-empty; speaker overlap is the corpus preparer's rule (custom: an
  error unless ``--allow_partial``), so it is not checked here.

Folds are numbered from 1. Every fold is checked: each row in exactly one split, no speaker in two splits.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cta_rnn.artifacts import SPLITS
from cta_rnn.corpora.common import label_order
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json

PROTOCOLS = ("loso_session", "loso_speaker")
"""The speaker-independent protocols every corpus supports (the default of ``cta_rnn.prepare``)."""
GIVEN = "given"
ALL_PROTOCOLS = (*PROTOCOLS, GIVEN)
Folds = dict[int, dict[str, pd.DataFrame]]


def _key(value: object) -> tuple:
    """Natural sort key: numbers (also numeric strings) by value, before other strings."""
    s = str(value)
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def _plan(manifest: pd.DataFrame, protocol: str) -> list[tuple[list[str], list[str]]]:
    """Per fold, the (test, valid) speaker lists."""
    spk_sess = manifest.groupby("speaker", sort=False)["session"].agg(lambda s: sorted(set(s), key=_key))
    multi = spk_sess[spk_sess.map(len) > 1]
    if len(multi):
        raise ValueError(f"speaker(s) in more than one session: {dict(multi.head())}")
    spk_sess = spk_sess.map(lambda s: s[0])
    if protocol == "loso_session":
        sessions = sorted(set(spk_sess), key=_key)
        if len(sessions) < 3:
            raise ValueError(f"loso_session needs at least 3 sessions, the manifest has {sessions}")
        by = {s: sorted(spk_sess.index[spk_sess == s]) for s in sessions}
        return [(by[s], by[sessions[i - 1]]) for i, s in enumerate(sessions)]
    if protocol == "loso_speaker":
        speakers = sorted(spk_sess.index, key=lambda k: (_key(spk_sess[k]), str(k)))
        if len(speakers) < 3:
            raise ValueError(f"loso_speaker needs at least 3 speakers, the manifest has {speakers}")
        plan = []
        for i, spk in enumerate(speakers):
            mates = [o for o in speakers if o != spk and spk_sess[o] == spk_sess[spk]]
            plan.append(([spk], mates or [speakers[(i + 1) % len(speakers)]]))
        return plan
    raise ValueError(f"unknown protocol {protocol!r}; choose from {ALL_PROTOCOLS}")


def check_no_leakage(splits: dict[str, pd.DataFrame], fold: int, n_rows: int | None = None) -> None:
    """Raise ValueError if a speaker is in two splits, a split is empty, or rows are lost or duplicated."""
    sets = {k: set(v["speaker"]) for k, v in splits.items()}
    for a, b in (("train", "test"), ("train", "valid"), ("valid", "test")):
        both = sets[a] & sets[b]
        if both:
            raise ValueError(f"fold {fold}: speaker(s) {sorted(both)} in both {a} and {b}")
    empty = [k for k, v in splits.items() if v.empty]
    if empty:
        raise ValueError(f"fold {fold}: empty split(s) {empty}")
    ids = pd.concat([v["ID"] for v in splits.values()]) if "ID" in splits["train"] else None
    if n_rows is not None and ids is not None and (len(ids) != n_rows or ids.duplicated().any()):
        raise ValueError(f"fold {fold}: splits hold {len(ids)} rows ({ids.nunique()} unique), manifest has {n_rows}")


def make_folds(manifest: pd.DataFrame, protocol: str, folds: Iterable[int] | None = None) -> Folds:
    """``{fold: {"train"|"valid"|"test": rows}}`` for ``protocol`` (optionally only the given 1-based folds)."""
    missing = [c for c in ("speaker", "session") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing} needed for fold protocols")
    if protocol == GIVEN:
        return _given(manifest, folds)
    plan = _plan(manifest, protocol)
    wanted = sorted(set(folds)) if folds is not None else list(range(1, len(plan) + 1))
    bad = [k for k in wanted if not 1 <= k <= len(plan)]
    if bad:
        raise ValueError(f"{protocol}: fold(s) {bad} out of range 1..{len(plan)}")
    out: Folds = {}
    for k in wanted:
        test, valid = plan[k - 1]
        is_test, is_valid = manifest["speaker"].isin(test), manifest["speaker"].isin(valid)
        splits = {
            "train": manifest[~is_test & ~is_valid],
            "valid": manifest[is_valid],
            "test": manifest[is_test],
        }
        splits = {name: df.reset_index(drop=True) for name, df in splits.items()}
        check_no_leakage(splits, k, len(manifest))
        out[k] = splits
    return out


def _given(manifest: pd.DataFrame, folds: Iterable[int] | None) -> Folds:
    """The one fold of the ``split`` column; checks values, non-empty splits and that no row is lost."""
    if "split" not in manifest.columns:
        raise ValueError(f"protocol {GIVEN!r} needs a 'split' column (train/valid/test) in the manifest")
    bad = [k for k in (set(folds) if folds is not None else {1}) if k != 1]
    if bad:
        raise ValueError(f"{GIVEN}: fold(s) {sorted(bad)} out of range 1..1")
    split = manifest["split"].astype(str)
    odd = sorted(set(split) - set(SPLITS))
    if odd:
        raise ValueError(f"{GIVEN}: split values {odd} not in {list(SPLITS)}")
    splits = {name: manifest[split == name].reset_index(drop=True) for name in SPLITS}
    empty = [k for k, v in splits.items() if v.empty]
    if empty:
        raise ValueError(f"{GIVEN}: empty split(s) {empty}")
    return {1: splits}


def fold_summary(folds: Folds, protocol: str) -> dict:
    """JSON-able description: per fold the speakers, sessions and class counts of each split."""
    summary: dict = {"protocol": protocol, "n_folds": len(folds), "folds": {}}
    labels = label_order(
        {str(e) for splits in folds.values() for df in splits.values() if "emotion" in df for e in df["emotion"]}
    )
    for k, splits in folds.items():
        summary["folds"][str(k)] = {
            name: {
                "speakers": sorted(map(str, set(df["speaker"]))),
                "sessions": sorted({str(s) for s in df["session"]}, key=_key),
                "n": len(df),
                "counts": {e: int((df["emotion"].astype(str) == e).sum()) for e in labels} if "emotion" in df else {},
            }
            for name, df in splits.items()
        }
    return summary


def _describe(name: str, split: dict) -> str:
    """``test Ses01F 528 (neu 171 hap 132 ang 147 sad 78)``; speakers listed when there are at most three."""
    spk = split["speakers"]
    who = ",".join(spk) if len(spk) <= 3 else f"{len(spk)} speakers"
    counts = " ".join(f"{e} {n}" for e, n in split["counts"].items())
    return f"{name} {who} {split['n']}" + (f" ({counts})" if counts else "")


def write_folds(
    manifest: pd.DataFrame,
    protocol: str,
    out_dir: str | Path,
    folds: Iterable[int] | None = None,
    log=print,
    made: Folds | None = None,
) -> dict:
    """Write ``out_dir/folds/<protocol>/fold<k>/{train,valid,test}.csv`` and ``folds.json``; return the summary.

    ``made``: the folds already built by :func:`make_folds` (built here otherwise). With ``folds=None`` (all
    folds) stale ``fold<k>`` folders of an earlier run are removed."""
    made = made if made is not None else make_folds(manifest, protocol, folds)
    base = Path(out_dir) / "folds" / protocol
    if folds is None and base.is_dir():  # a full rewrite drops fold folders left by an earlier, larger manifest
        for old in base.glob("fold*"):
            if old.is_dir() and re.fullmatch(r"fold\d+", old.name) and int(old.name[4:]) not in made:
                shutil.rmtree(old)
    for k, splits in made.items():
        for name in SPLITS:
            atomic_to_csv(splits[name], base / f"fold{k}" / f"{name}.csv")
    summary = fold_summary(made, protocol)
    atomic_write_json(base / "folds.json", summary)
    for k, info in summary["folds"].items():
        log(f"{protocol} fold {k}: " + " | ".join(_describe(name, info[name]) for name in ("test", "valid", "train")))
    return summary
