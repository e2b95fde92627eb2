"""MSP-IMPROV -> manifest (A/H/S/N -> ang/hap/sad/neu; O and X dropped), checked against the published counts.

Layout read::

    Evaluation.txt (or Evalution.txt)     consensus lines ``UTD-IMPROV-<id>.avi; N; A:..; V:..; D:.. ; N:..;``
                                          (label; mean arousal, valence, dominance ratings; naturalness ignored)
    Audio/session<k>/<S##E>/<C>/MSP-IMPROV-<id>.wav   (copies without the Audio/ level are accepted)

``<id>`` = ``S01A-F01-S-FM01``: sentence 01 with target emotion A, speaker F01 (gender F, session 1),
condition S (T target improvised, R target read, S other improvised, P natural interaction), dyad/turn FM01.
The speaker is taken from the ``F01`` field. Audio is located by file name (one walk of the root).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cta_rnn import DIMENSIONS
from cta_rnn.corpora.common import (
    CORPUS_COLUMNS,
    Log,
    count_table,
    diff_counts,
    log_unrated,
    read_text,
    report_mismatches,
    report_missing_wavs,
    wav_durations,
)
from cta_rnn.corpora.expected_counts import (
    MSP_IMPROV_CLASS_TOTALS,
    MSP_IMPROV_CONDITION_COUNTS,
    MSP_IMPROV_SESSION_COUNTS,
    MSP_IMPROV_TURNS,
)

LABEL_MAP = {"A": "ang", "H": "hap", "S": "sad", "N": "neu"}
DROPPED_LABELS = frozenset({"O", "X"})  # other, no agreement
CONDITIONS = ("T", "R", "S", "P")
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
COLUMNS = [*CORPUS_COLUMNS, *DIMENSIONS]
"""Manifest columns; a dimension the consensus line rates ``NaN`` or lacks is an empty cell."""

ID_RE = re.compile(
    r"^S(?P<sentence>\d{2})(?P<target>[A-Z])-(?P<speaker>(?P<gender>[FM])(?P<session>\d{2}))"
    r"-(?P<condition>[A-Z])-(?P<dyad>[A-Z]{1,2})(?P<turn>\d{2,3})$"
)
CONSENSUS_RE = re.compile(r"^(?:UTD|MSP)-IMPROV-(?P<id>[^.;\s]+)\.(?:avi|wav)\s*;\s*(?P<label>[^;\s]*)\s*;")
FIELD_LETTERS = {"arousal": "A", "valence": "V", "dominance": "D"}
"""Field of each dimension in a consensus line (``N:`` after them is naturalness, not read)."""
FIELD_RES = {d: re.compile(rf"(?:^|;)\s*{k}\s*:\s*(?P<value>[^;]*)") for d, k in FIELD_LETTERS.items()}


@dataclass(frozen=True)
class Consensus:
    """The consensus of one turn: label letter and mean ratings (NaN where rated ``NaN`` or missing)."""

    label: str
    arousal: float
    valence: float
    dominance: float


def parse_utterance_id(uid: str) -> dict[str, object]:
    """Fields of ``S01A-F01-S-FM01`` (with or without the ``MSP-IMPROV-`` / ``UTD-IMPROV-`` prefix and suffix)."""
    core = re.sub(r"^(?:MSP|UTD)-IMPROV-", "", Path(uid).stem if uid.endswith((".wav", ".avi")) else uid)
    m = ID_RE.match(core)
    if not m or m["condition"] not in CONDITIONS:
        raise ValueError(f"{uid!r} is not an MSP-IMPROV id (S##E-G##-C-LL##, C in {'/'.join(CONDITIONS)})")
    return {
        "ID": f"MSP-IMPROV-{core}",
        "sentence": int(m["sentence"]),
        "target": m["target"],
        "speaker": m["speaker"],
        "gender": m["gender"],
        "session": int(m["session"]),
        "condition": m["condition"],
        "dyad": m["dyad"],
        "turn": int(m["turn"]),
    }


def find_label_file(root: Path) -> Path:
    """``Evaluation.txt`` or its misspelt twin ``Evalution.txt`` at the root."""
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"MSP-IMPROV root {root}: no {' or '.join(LABEL_FILES)}")


def parse_rating(raw: str, field: str, where: str) -> float:
    """One rating field's value: a finite number, or NaN for ``NaN`` / empty; anything else raises naming ``where``."""
    raw = raw.strip()
    if not raw or raw.lower() == "nan":
        return math.nan
    try:
        value = float(raw)
    except ValueError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{where}: rating {field} must be a number or NaN, got {raw!r}")
    return value


def parse_dimensions(fields: str, where: str) -> dict[str, float]:
    """``arousal/valence/dominance -> rating`` from the fields after the label (``A:2.8; V :3.0; D:NaN``);
    a missing field is NaN."""
    out = {}
    for dim, pattern in FIELD_RES.items():
        m = pattern.search(fields)
        out[dim] = parse_rating(m["value"], f"{FIELD_LETTERS[dim]} ({dim})", where) if m else math.nan
    return out


def parse_evaluation(path: str | Path, log: Log = print) -> dict[str, Consensus]:
    """``MSP-IMPROV-<id> -> Consensus`` from the consensus lines; per-rater and blank lines are skipped.

    A line that starts like a consensus line but does not parse (id, label or a rating) raises a ValueError naming
    ``file:line``. A repeated id keeps its first line (a conflicting label is reported with a warning).
    """
    out: dict[str, Consensus] = {}
    for i, line in enumerate(read_text(path).splitlines(), 1):
        s = line.strip()
        if not re.match(r"^(?:UTD|MSP)-IMPROV-", s):
            continue  # rater lines, blank lines
        where = f"{path}:{i}"
        m = CONSENSUS_RE.match(s)
        if not m:
            raise ValueError(f"{where}: malformed consensus line {s[:120]!r}")
        label = m["label"].upper()
        if label not in LABEL_MAP and label not in DROPPED_LABELS:
            raise ValueError(f"{where}: unknown consensus label {m['label']!r} (expected A/H/S/N/O/X)")
        try:
            uid = parse_utterance_id(m["id"])["ID"]
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        dims = parse_dimensions(s[m.end() :], where)
        if uid in out and out[uid].label != label:
            first = out[uid].label
            log(f"WARNING {where}: {uid} labelled {first} earlier and {label} here; keeping {first}")
        out.setdefault(uid, Consensus(label, **dims))
    return out


def index_files(root: Path, exts: tuple[str, ...] = (".wav", ".txt")) -> dict[str, str]:
    """``basename -> absolute path`` of every file with one of ``exts`` under ``root`` (one sorted walk;
    symlinks followed; the first of duplicate names wins, so ``Audio/`` comes before top-level session
    folders; dot-files skipped)."""
    index: dict[str, str] = {}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # corpora are often symlinked in
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to the same folder
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(exts):
                index.setdefault(name, os.path.abspath(os.path.join(dirpath, name)))
    return index


def _text(index: dict[str, str], uid: str) -> str:
    """Transcript of ``uid`` when a ``<uid>.txt`` file exists anywhere under the root, else empty."""
    p = index.get(f"{uid}.txt")
    return " ".join(read_text(p).split()) if p else ""


def check_counts(df: pd.DataFrame, conditions: list[str], allow_partial: bool, log: Log = print) -> None:
    """Full set: per-session, per-condition and class totals; a condition subset: the per-condition table only."""
    problems = diff_counts(df, "condition", {c: MSP_IMPROV_CONDITION_COUNTS[c] for c in conditions})
    if set(conditions) == set(CONDITIONS):
        problems += diff_counts(df, "session", MSP_IMPROV_SESSION_COUNTS)
        found = df["emotion"].value_counts().to_dict()
        problems += [
            f"all / {k}: found {found.get(k, 0)}, expected {v}"
            for k, v in MSP_IMPROV_CLASS_TOTALS.items()
            if found.get(k, 0) != v
        ]
    report_mismatches(problems, "MSP-IMPROV", allow_partial, log)


def prepare_msp_improv(
    root: str | Path, allow_partial: bool = False, conditions: Iterable[str] | None = None, log: Log = print
) -> pd.DataFrame:
    """Parse an MSP-IMPROV release into the manifest (sorted by ID), after checking the counts.

    ``conditions`` (subset of T/R/S/P) selects utterances; the full set is checked against the per-session and
    per-condition tables, a subset against the per-condition table. ``allow_partial`` turns count mismatches and
    missing wavs into warnings (missing wavs are skipped).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MSP-IMPROV root not found: {root}")
    conds = [c.upper() for c in conditions] if conditions else list(CONDITIONS)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad:
        raise ValueError(f"MSP-IMPROV conditions must be among {CONDITIONS}, got {bad}")
    labels = parse_evaluation(find_label_file(root), log)
    index = index_files(root)
    rows, missing = [], []
    for uid, rec in labels.items():
        info = parse_utterance_id(uid)
        if rec.label not in LABEL_MAP or info["condition"] not in conds:
            continue
        wav = index.get(f"{uid}.wav")
        if wav is None:
            missing.append(uid)
            continue
        rows.append(
            {
                "ID": uid,
                "wav": wav,
                "emotion": LABEL_MAP[rec.label],
                "speaker": info["speaker"],
                "session": info["session"],
                "gender": info["gender"],
                "dialog": f"S{info['sentence']:02d}{info['target']}",
                "condition": info["condition"],
                "text": _text(index, uid),
                **{d: getattr(rec, d) for d in DIMENSIONS},
            }
        )
    report_missing_wavs(missing, "MSP-IMPROV", allow_partial, log)
    df = pd.DataFrame(rows, columns=COLUMNS[:2] + COLUMNS[3:])
    log(
        f"MSP-IMPROV: {len(labels)} labelled turns ({MSP_IMPROV_TURNS} published), "
        f"{len(df)} kept (A/H/S/N, conditions {''.join(conds)})"
    )
    log("class x session table:\n" + count_table(df, "session").to_string())
    log("class x condition table:\n" + count_table(df, "condition", CONDITIONS).to_string())
    check_counts(df, conds, allow_partial, log)
    df = df.sort_values("ID").reset_index(drop=True)
    df.insert(2, "duration", wav_durations(df["wav"]))
    log_unrated(df, DIMENSIONS, "MSP-IMPROV", log)
    return df[COLUMNS]
