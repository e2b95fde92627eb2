"""Helpers shared by the corpus parsers: robust text reading, wav durations, count checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
import soundfile as sf

from cta_rnn import EMOTIONS

Log = Callable[[str], None]
CORPUS_COLUMNS = ["ID", "wav", "duration", "emotion", "speaker", "session", "gender", "dialog", "condition", "text"]
"""Manifest columns of the licensed corpora (IEMOCAP, MSP-IMPROV), before their dimension ratings."""
Counts = Mapping[object, Mapping[str, int]]


def read_text(path: str | Path) -> str:
    """Read a text file as UTF-8, falling back to latin-1 for stray non-UTF-8 bytes."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def log_unrated(df: pd.DataFrame, dims: Iterable[str], corpus: str, log: Log = print) -> None:
    """``<corpus>: dimension ratings missing: arousal 0, valence 1, dominance 2 of N utterances`` (prep.log)."""
    unrated = ", ".join(f"{d} {int(df[d].isna().sum())}" for d in dims)
    log(f"{corpus}: dimension ratings missing: {unrated} of {len(df)} utterances")


def wav_durations(paths: Iterable[str]) -> list[float]:
    """Durations in seconds from the wav headers (frames / samplerate); an unreadable file is named."""
    out = []
    for p in paths:
        try:
            info = sf.info(p)
        except Exception as exc:  # soundfile raises RuntimeError / LibsndfileError
            raise ValueError(f"{p}: unreadable audio ({exc})") from exc
        out.append(round(info.frames / info.samplerate, 4))
    return out


def label_order(labels: Iterable[object]) -> list[str]:
    """Class order of a label set: the paper's (neu, hap, ang, sad) for a subset of it, else sorted."""
    seen = {str(x) for x in labels}
    return [e for e in EMOTIONS if e in seen] if seen <= set(EMOTIONS) else sorted(seen)


def count_table(df: pd.DataFrame, by: str, order: Iterable | None = None) -> pd.DataFrame:
    """Class x ``by`` table: rows are ``by`` values (in ``order`` if given) plus a total row, columns the
    4 emotions plus total."""
    tab = pd.crosstab(df[by], df["emotion"]).reindex(columns=list(EMOTIONS), fill_value=0)
    if order is not None:
        tab = tab.reindex([k for k in order if k in tab.index])
    tab["total"] = tab.sum(axis=1)
    tab.loc["total"] = tab.sum(axis=0)
    tab.index.name = by
    return tab.astype(int)


def diff_counts(df: pd.DataFrame, by: str, expected: Counts, label: str | None = None) -> list[str]:
    """Cells where ``df``'s class counts per ``by`` differ from ``expected``, e.g. ``session 3 / sad: found 300,
    expected 305``; values of ``by`` found but not expected are reported too."""
    label = label or by
    found = pd.crosstab(df[by], df["emotion"]) if len(df) else pd.DataFrame()
    out = []
    for key, row in expected.items():
        for emo, want in row.items():
            got = int(found.at[key, emo]) if key in found.index and emo in found.columns else 0
            if got != want:
                out.append(f"{label} {key} / {emo}: found {got}, expected {want}")
    for key in sorted(set(found.index) - set(expected), key=str):
        out.append(f"{label} {key}: found {int(found.loc[key].sum())} utterances, expected none")
    return out


def diff_totals(found: Mapping[str, int], expected: Mapping[str, int], label: str) -> list[str]:
    """Differences between two ``name -> count`` maps, phrased like :func:`diff_counts`."""
    return [
        f"{label} / {k}: found {int(found.get(k, 0))}, expected {v}"
        for k, v in expected.items()
        if int(found.get(k, 0)) != v
    ]


def report_mismatches(problems: list[str], corpus: str, allow_partial: bool, log: Log = print) -> None:
    """Raise a ValueError listing ``problems`` unless ``allow_partial`` (then only print a warning)."""
    if not problems:
        log(f"{corpus}: counts match the published tables")
        return
    msg = f"{corpus}: {len(problems)} count(s) differ from the published tables: " + "; ".join(problems)
    if not allow_partial:
        raise ValueError(msg + " (pass allow_partial=True / --allow_partial for a partial copy)")
    log("WARNING " + msg)


def report_missing_wavs(missing: list[str], corpus: str, allow_partial: bool, log: Log = print) -> None:
    """Raise a ValueError naming labelled utterances without audio unless ``allow_partial`` (then warn)."""
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
    msg = f"{corpus}: {len(missing)} labelled utterance(s) have no wav file: {shown}"
    if not allow_partial:
        raise FileNotFoundError(msg + " (pass allow_partial=True / --allow_partial to skip them)")
    log(f"WARNING {msg}; skipped")
