"""Bring your own corpus -> the common manifest, with any set of emotion labels.

``root`` is either a CSV with columns ``path, emotion, speaker`` (optional ``session, text, split, gender,
arousal, valence, dominance``; paths relative to the CSV's folder or absolute) or a folder laid out
``<emotion>/<speaker>_<anything>.wav`` (also .flac/.ogg). Sessions default to one per speaker; ``split``
(train/valid/test) feeds the ``given`` protocol.

Dimension columns (``arousal``, ``valence``, ``dominance``) hold numbers or empty cells (no rating) on any finite
scale (1-5, -1..1, ...): they are copied to the manifest as given, so a model trained on them reports on that
same scale. Only the dimension columns the CSV has are written; a folder corpus has none.

    python -m cta_rnn.prepare custom --root corpus.csv --out data/ --protocols loso_speaker,given
    python -m cta_rnn.corpora.custom protocols ROOT          # protocols the corpus supports (comma list)
    python -m cta_rnn.corpora.custom labels data/manifest.csv data/train_overrides.yaml
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from cta_rnn import DIMENSIONS
from cta_rnn.artifacts import dimension_values, read_manifest
from cta_rnn.corpora.common import Log, label_order, log_unrated, wav_durations
from cta_rnn.corpora.folds import GIVEN
from cta_rnn.io_utils import atomic_write_text

REQUIRED = ("path", "emotion", "speaker")
OPTIONAL = ("session", "text", "split", "gender", *DIMENSIONS)
AUDIO_EXTS = (".wav", ".flac", ".ogg")
SPLIT_NAMES = {"train": "train", "test": "test", **dict.fromkeys(("valid", "val", "dev", "validation"), "valid")}
COLUMNS = ["ID", "wav", "duration", "emotion", "speaker", "session", "gender", "text", "condition"]


def _few(items: Sequence[str], n: int = 5) -> str:
    """``a, b, c ... (12 in all)``."""
    return ", ".join(map(str, items[:n])) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def read_csv_corpus(csv: Path) -> pd.DataFrame:
    """The rows of a corpus CSV (header case-insensitive), ``path`` resolved against the CSV's folder, dimension
    columns as floats (NaN = empty; a value that is not a number raises naming the CSV line)."""
    df = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df = df.rename(columns=lambda c: str(c).strip().lower())
    unknown = [c for c in df.columns if c not in REQUIRED + OPTIONAL]
    missing = [c for c in REQUIRED if c not in df.columns]
    if unknown or missing:
        what = f"unknown column(s) {unknown}" if unknown else f"missing column(s) {missing}"
        raise ValueError(f"{csv}: {what}; allowed: {list(REQUIRED)} (required) + {list(OPTIONAL)} (optional)")
    if df.empty:
        raise ValueError(f"{csv}: no rows")
    df = df.apply(lambda col: col.str.strip())
    for c in REQUIRED:
        empty = (df.index[df[c] == ""] + 2).tolist()  # CSV line numbers (header = line 1)
        if empty:
            raise ValueError(f"{csv}: empty {c!r} on line(s) {_few(empty)}")
    for dim in DIMENSIONS:
        if dim in df:
            df[dim] = dimension_values(df, dim, csv)
    df["wav"] = [str(p if p.is_absolute() else (csv.parent / p).resolve()) for p in map(Path, df["path"])]
    return df.drop(columns="path")


def scan_folder(root: Path) -> pd.DataFrame:
    """Rows of a ``<emotion>/<speaker>_*.wav`` tree (sorted by path)."""
    rows = []
    for f in sorted(root.glob("*/*")):
        if f.suffix.lower() not in AUDIO_EXTS or f.parent.name.startswith(".") or not f.is_file():
            continue
        if "_" not in f.stem or f.stem.startswith("_"):
            raise ValueError(f"{f}: file name must be <speaker>_<anything>{f.suffix} (speaker = part before '_')")
        rows.append({"wav": str(f.resolve()), "emotion": f.parent.name, "speaker": f.stem.split("_", 1)[0]})
    if not rows:
        raise ValueError(f"{root}: no <emotion>/<speaker>_*{{{','.join(AUDIO_EXTS)}}} audio files found")
    return pd.DataFrame(rows)


def make_ids(speakers: Sequence[str], wavs: Sequence[str]) -> list[str]:
    """Unique filesystem-safe IDs ``<speaker>_<stem>``; collisions get ``-2``, ``-3``... in path order."""
    base = []
    for spk, wav in zip(speakers, wavs):
        stem = Path(wav).stem
        raw = stem if stem.startswith(f"{spk}_") else f"{spk}_{stem}"
        base.append(re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-") or "utt")
    count = Counter(base)
    used = {b for b, n in count.items() if n == 1}
    ids = [""] * len(base)
    for i in sorted(range(len(base)), key=lambda i: (base[i], wavs[i])):
        cand, k = base[i], 1
        while count[base[i]] > 1 and cand in used:
            k += 1
            cand = f"{base[i]}-{k}"
        used.add(cand)
        ids[i] = cand
    return ids


def _check_labels(df: pd.DataFrame, where: Path, allow_partial: bool, log: Log) -> None:
    """At least 2 labels; each with >= 2 utterances from >= 2 speakers (else an error unless allow_partial)."""
    if df["emotion"].nunique() < 2:
        raise ValueError(f"{where}: only one emotion label {sorted(set(df['emotion']))}; need at least 2")
    stats = df.groupby("emotion")["speaker"].agg(["size", "nunique"])
    few = stats[(stats["size"] < 2) | (stats["nunique"] < 2)]
    if few.empty:
        return
    which = "; ".join(f"{lab!r}: {r['size']} utterance(s), {r['nunique']} speaker(s)" for lab, r in few.iterrows())
    msg = f"{where}: label(s) with too few examples ({which}); each needs >= 2 utterances from >= 2 speakers"
    if not allow_partial:
        raise ValueError(msg + " (fix the labels or pass --allow_partial)")
    log(f"WARNING {msg}")


def _check_label_case(df: pd.DataFrame, where: Path, allow_partial: bool, log: Log) -> None:
    """Labels that differ only in case (``Happy`` / ``happy``) would become separate classes: an error."""
    groups: dict[str, list[str]] = {}
    for label in sorted(set(df["emotion"])):
        groups.setdefault(label.casefold(), []).append(label)
    clashes = [" / ".join(repr(x) for x in labels) for labels in groups.values() if len(labels) > 1]
    if not clashes:
        return
    msg = f"{where}: labels that differ only in case would be separate classes: {'; '.join(clashes)}"
    if not allow_partial:
        raise ValueError(msg + " (write each label one way, or pass --allow_partial to keep them apart)")
    log(f"WARNING {msg}")


def _warn_small_speakers(df: pd.DataFrame, where: Path, log: Log) -> None:
    """Speakers with fewer utterances than labels make leave-one-speaker-out test or validation sets that small."""
    counts = df["speaker"].value_counts()
    small = counts[counts < df["emotion"].nunique()].sort_index()
    if small.empty:
        return
    who = _few([f"{spk!r} ({n})" for spk, n in small.items()])
    log(
        f"WARNING {where}: speaker(s) with fewer utterances than labels: {who}; in leave-one-speaker-out folds "
        "their test or validation sets are that small, so those folds' scores (and best epochs) are noise"
    )


def _check_split(df: pd.DataFrame, where: Path, allow_partial: bool, log: Log) -> pd.Series:
    """Normalised split column; unknown values, empty splits and test-speaker leakage are errors."""
    split = df["split"].str.lower().map(SPLIT_NAMES)
    bad = sorted(set(df["split"][split.isna()]))
    if bad:
        raise ValueError(f"{where}: split value(s) {bad} not allowed; use train, valid (or dev/val), test")
    spk = {s: set(df["speaker"][split == s]) for s in ("train", "valid", "test")}
    empty = [s for s, v in spk.items() if not v]
    if empty:
        raise ValueError(f"{where}: split column has no {' / '.join(empty)} rows")
    leak = sorted((spk["train"] | spk["valid"]) & spk["test"])
    if leak:
        msg = f"{where}: speaker(s) {_few(leak)} in both the test split and train/valid (speaker leakage)"
        if not allow_partial:
            raise ValueError(msg + "; pass --allow_partial to accept it")
        log(f"WARNING {msg}")
    if spk["train"] & spk["valid"]:
        log(f"WARNING {where}: {len(spk['train'] & spk['valid'])} speaker(s) in both train and valid")
    return split


def prepare_custom(
    root: str | Path, allow_partial: bool = False, conditions: Sequence[str] | None = None, log: Log = print
) -> pd.DataFrame:
    """A corpus CSV or ``<emotion>/<speaker>_*.wav`` folder -> checked manifest (``condition`` empty)."""
    root = Path(root)
    if conditions:
        raise ValueError("custom corpora have no recording conditions: drop --conditions")
    if root.is_dir():
        df = scan_folder(root)
    elif root.is_file():
        df = read_csv_corpus(root)
    else:
        raise FileNotFoundError(f"{root}: corpus CSV or folder not found")
    dup = sorted(set(df["wav"][df["wav"].duplicated()]))
    if dup:
        raise ValueError(f"{root}: audio file(s) listed twice: {_few(dup)}")
    gone = [w for w in df["wav"] if not Path(w).is_file()]
    if gone:
        msg = f"{root}: {len(gone)} audio file(s) not found: {_few(gone)}"
        if not allow_partial:
            raise FileNotFoundError(msg + " (pass --allow_partial to skip them)")
        log(f"WARNING {msg}; skipped")
        df = df[~df["wav"].isin(gone)].reset_index(drop=True)
    speakers = sorted(set(df["speaker"]))
    if len(speakers) < 2:
        raise ValueError(f"{root}: a single speaker {speakers}: speaker-independent folds need at least 2 (3 for LOSO)")
    _check_label_case(df, root, allow_partial, log)
    _check_labels(df, root, allow_partial, log)
    _warn_small_speakers(df, root, log)
    df["duration"] = wav_durations(df["wav"])
    silent = df["wav"][df["duration"] <= 0].tolist()
    if silent:
        raise ValueError(f"{silent[0]}: empty audio (0 samples)")
    for c in ("session", "gender", "text"):
        df[c] = df[c] if c in df else ""
    df["session"] = df["session"].where(df["session"] != "", df["speaker"])
    df["condition"] = ""
    df["ID"] = make_ids(df["speaker"].tolist(), df["wav"].tolist())
    dims = [d for d in DIMENSIONS if d in df]
    cols = COLUMNS + dims + (["split"] if "split" in df else [])
    if "split" in df:
        df["split"] = _check_split(df, root, allow_partial, log)
    log(f"custom: {len(df)} utterances, {len(speakers)} speakers, labels {label_order(df['emotion'])}")
    if dims:
        log_unrated(df, dims, "custom", log)
    return df[cols].reset_index(drop=True)


def supported_protocols(root: str | Path) -> list[str]:
    """``loso_speaker`` (unless a split column is given with < 3 speakers), plus ``given`` with a split column."""
    root = Path(root)
    if not root.is_file():
        return ["loso_speaker"]
    df = read_csv_corpus(root)
    if "split" not in df:
        return ["loso_speaker"]
    return (["loso_speaker"] if df["speaker"].nunique() >= 3 else []) + [GIVEN]


def write_label_overrides(manifest_csv: str | Path, out_yaml: str | Path) -> list[str]:
    """Write ``labels: [...]`` of a manifest as a training override YAML; return the labels."""
    labels = label_order(read_manifest(manifest_csv, required=("ID", "emotion"))["emotion"])
    atomic_write_text(out_yaml, "# written by data prep: the corpus's label set\n" + yaml.safe_dump({"labels": labels}))
    return labels
