"""IEMOCAP_full_release -> manifest (4 classes, exc merged into hap), checked against the published counts.

Layout read::

    SessionN/dialog/EmoEvaluation/<dialog>.txt     labels (subfolders Categorical/, Attribute/, ... skipped)
                                                   ``[start - end] UTT CODE [V, A, D]``: mean ratings -> the
                                                   valence, arousal (A = activation), dominance columns
    SessionN/dialog/transcriptions/<dialog>.txt    ``UTT [start-end]: text``
    SessionN/sentences/wav/<dialog>/<utt>.wav
"""

from __future__ import annotations

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
    diff_totals,
    log_unrated,
    read_text,
    report_mismatches,
    report_missing_wavs,
    wav_durations,
)
from cta_rnn.corpora.expected_counts import (
    IEMOCAP_CLASS_TOTALS,
    IEMOCAP_RAW_HAP_EXC,
    IEMOCAP_SESSION_COUNTS,
    IEMOCAP_SPEAKER_COUNTS,
)

SESSIONS = (1, 2, 3, 4, 5)
CODE_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
"""Codes kept (exc merged into hap); every other known code is dropped."""
DROPPED_CODES = frozenset({"fru", "sur", "fea", "dis", "oth", "xxx"})
CONDITIONS = ("impro", "script")
COLUMNS = [*CORPUS_COLUMNS, *DIMENSIONS]
"""Manifest columns; the dimensions are the mean annotator ratings (1-5) of the label line's ``[V, A, D]``."""

NUM = r"\d+(?:\.\d*)?"
LABEL_RE = re.compile(
    rf"^\[\s*(?P<start>{NUM})\s*-\s*(?P<end>{NUM})\s*\]\s+(?P<utt>\S+)\s+(?P<code>[A-Za-z]+)"
    rf"\s+\[\s*(?P<v>{NUM})\s*,\s*(?P<a>{NUM})\s*,\s*(?P<d>{NUM})\s*\]\s*$"
)
UTT_RE = re.compile(r"^Ses(?P<session>\d{2})(?P<lead>[FM])_(?P<rest>.+)_(?P<gender>[FM])(?P<turn>[0-9A-Za-z]+)$")
"""``Ses01F_impro01_M003``: the speaker's gender is the first letter of the LAST ``_`` token."""
TRANSCRIPT_RE = re.compile(r"^(?P<utt>\S+)\s*\[[^\]]*\]\s*:\s?(?P<text>.*)$")
LABEL_FILE_RE = re.compile(r"^Ses\d{2}[FM]_.+\.txt$")


@dataclass(frozen=True)
class LabelRecord:
    """One utterance-level label line of an EmoEvaluation file."""

    utt: str
    code: str
    start: float
    end: float
    arousal: float  # the label line's [V, A, D] are valence, activation (= arousal), dominance
    valence: float
    dominance: float
    where: str  # file:line, for error messages


def parse_utt_id(utt: str) -> dict[str, object]:
    """Session (int), gender and speaker (``Ses01M``) of an utterance id, from its last ``_`` token."""
    m = UTT_RE.match(utt)
    if not m:
        raise ValueError(f"{utt!r} is not an IEMOCAP utterance id (SesNN[FM]_<dialog>_[FM]NNN)")
    session, gender = int(m["session"]), m["gender"]
    return {"session": session, "gender": gender, "speaker": f"Ses{session:02d}{gender}"}


def parse_label_file(path: str | Path) -> list[LabelRecord]:
    """Utterance label lines of one EmoEvaluation file; header, annotator and blank lines are skipped.

    A line that starts with ``[`` but is not ``[start - end] UTT CODE [v, a, d]`` raises a ValueError naming
    ``file:line``; so does an unknown emotion code or an id that is not an utterance id.
    """
    out = []
    for i, line in enumerate(read_text(path).splitlines(), 1):
        s = line.strip()
        if not s.startswith("["):
            continue  # '% [START_TIME - END_TIME] ...' header, 'C-E1:' / 'A-F2:' annotator lines, blank lines
        where = f"{path}:{i}"
        m = LABEL_RE.match(s)
        if not m:
            raise ValueError(f"{where}: malformed label line {s[:120]!r} (expected '[start - end] UTT CODE [v, a, d]')")
        code = m["code"].lower()
        if code not in CODE_MAP and code not in DROPPED_CODES:
            raise ValueError(f"{where}: unknown emotion code {m['code']!r}")
        try:
            parse_utt_id(m["utt"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out.append(
            LabelRecord(
                utt=m["utt"],
                code=code,
                start=float(m["start"]),
                end=float(m["end"]),
                arousal=float(m["a"]),
                valence=float(m["v"]),
                dominance=float(m["d"]),
                where=where,
            )
        )
    return out


def parse_transcripts(path: str | Path) -> dict[str, str]:
    """``utt -> text`` from a transcription file (lines ``UTT [start-end]: text``; others ignored)."""
    out = {}
    for line in read_text(path).splitlines():
        m = TRANSCRIPT_RE.match(line.strip())
        if m:
            out[m["utt"]] = m["text"].strip()
    return out


def find_root(root: str | Path) -> Path:
    """The folder holding ``Session1..5``: ``root`` itself or ``root/IEMOCAP_full_release``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"IEMOCAP root not found: {root}")
    nested = root / "IEMOCAP_full_release"
    if not any((root / f"Session{s}").is_dir() for s in SESSIONS) and nested.is_dir():
        return nested
    return root


def label_files(root: Path, session: int) -> list[Path]:
    """The top-level ``<dialog>.txt`` label files of one session (subfolders and dot-files skipped)."""
    emo = root / f"Session{session}" / "dialog" / "EmoEvaluation"
    return sorted(p for p in emo.iterdir() if p.is_file() and LABEL_FILE_RE.match(p.name))


def _available_sessions(root: Path, allow_partial: bool) -> list[int]:
    """Sessions with an EmoEvaluation folder; missing ones are an error unless partial (then at least one)."""
    have = [s for s in SESSIONS if (root / f"Session{s}" / "dialog" / "EmoEvaluation").is_dir()]
    missing = [f"Session{s}" for s in SESSIONS if s not in have]
    if missing and (not allow_partial or not have):
        raise FileNotFoundError(
            f"IEMOCAP root {root}: missing {', '.join(missing)} (each needs SessionN/dialog/EmoEvaluation/)"
        )
    return have


def _session_rows(root: Path, session: int) -> tuple[list[dict], list[LabelRecord]]:
    """Manifest rows (without duration) of one session, and every label record found (dropped codes too)."""
    rows, records = [], []
    for lab in label_files(root, session):
        dialog = lab.stem
        trans = root / f"Session{session}" / "dialog" / "transcriptions" / f"{dialog}.txt"
        texts = parse_transcripts(trans) if trans.is_file() else {}
        for rec in parse_label_file(lab):
            info = parse_utt_id(rec.utt)
            if info["session"] != session:
                raise ValueError(f"{rec.where}: {rec.utt} belongs to session {info['session']}, not {session}")
            records.append(rec)
            if rec.code not in CODE_MAP:
                continue
            wav = root / f"Session{session}" / "sentences" / "wav" / dialog / f"{rec.utt}.wav"
            rows.append(
                {
                    "ID": rec.utt,
                    "wav": os.path.abspath(wav),
                    "emotion": CODE_MAP[rec.code],
                    "raw_code": rec.code,
                    "speaker": info["speaker"],
                    "session": session,
                    "gender": info["gender"],
                    "dialog": dialog,
                    "condition": "impro" if "_impro" in dialog else "script",
                    "text": texts.get(rec.utt, ""),
                    **{d: getattr(rec, d) for d in DIMENSIONS},
                }
            )
    return rows, records


def check_counts(df: pd.DataFrame, sessions: Iterable[int], allow_partial: bool, log: Log = print) -> None:
    """Compare per-session, per-speaker and hap/exc counts with paper.md; raise on a difference unless partial."""
    sessions = set(sessions)
    problems = diff_counts(df, "session", {s: c for s, c in IEMOCAP_SESSION_COUNTS.items() if s in sessions})
    spk = {k: v for k, v in IEMOCAP_SPEAKER_COUNTS.items() if int(k[3:5]) in sessions}
    problems += diff_counts(df, "speaker", spk)
    if sessions == set(SESSIONS):
        problems += diff_totals(df["raw_code"].value_counts().to_dict(), IEMOCAP_RAW_HAP_EXC, "code before merge")
        problems += diff_totals(df["emotion"].value_counts().to_dict(), IEMOCAP_CLASS_TOTALS, "all sessions")
    report_mismatches(problems, "IEMOCAP", allow_partial, log)


def prepare_iemocap(
    root: str | Path, allow_partial: bool = False, conditions: Iterable[str] | None = None, log: Log = print
) -> pd.DataFrame:
    """Parse an IEMOCAP_full_release tree into the manifest (sorted by ID), after checking the counts.

    The counts are checked on the whole corpus (impro + script); ``conditions`` (``impro``/``script``) then
    selects a subset. ``allow_partial`` turns count mismatches, missing sessions and missing wavs into warnings
    (missing wavs are skipped).
    """
    root = find_root(root)
    conds = list(conditions) if conditions else list(CONDITIONS)
    bad = [c for c in conds if c not in CONDITIONS]
    if bad:
        raise ValueError(f"IEMOCAP conditions must be among {CONDITIONS}, got {bad}")
    sessions = _available_sessions(root, allow_partial)
    rows: list[dict] = []
    n_labels = 0
    seen: dict[str, str] = {}
    for s in sessions:
        r, recs = _session_rows(root, s)
        rows += r
        n_labels += len(recs)
        for rec in recs:
            if rec.utt in seen:
                raise ValueError(f"IEMOCAP: {rec.utt} labelled twice: {seen[rec.utt]} and {rec.where}")
            seen[rec.utt] = rec.where
    df = pd.DataFrame(rows, columns=COLUMNS[:2] + COLUMNS[3:] + ["raw_code"])
    dup = df["ID"][df["ID"].duplicated()].tolist()
    if dup:
        raise ValueError(f"IEMOCAP: utterance(s) labelled twice: {dup[:5]}")
    exists = df["wav"].map(os.path.isfile).astype(bool)
    report_missing_wavs(df.loc[~exists, "wav"].tolist(), "IEMOCAP", allow_partial, log)
    df = df[exists]
    log(f"IEMOCAP: {n_labels} labelled utterances in sessions {sessions}, {len(df)} kept (neu/hap+exc/ang/sad)")
    log("class x session table:\n" + count_table(df, "session").to_string())
    check_counts(df, sessions, allow_partial, log)
    df = df[df["condition"].isin(conds)].sort_values("ID").reset_index(drop=True)
    df.insert(2, "duration", wav_durations(df["wav"]))
    if set(conds) != set(CONDITIONS):
        log(f"IEMOCAP: conditions {conds} selected: {len(df)} utterances")
    log_unrated(df, DIMENSIONS, "IEMOCAP", log)
    return df[COLUMNS]
