"""Speaker turns from a diarisation in RTTM, for ``cta-rnn timeline --rttm``.

A line ``SPEAKER <file-id> <chan> <onset> <dur> <NA> <NA> <speaker> <NA> <NA>`` is one turn (times in seconds);
lines of other types (``SPKR-INFO``, ``LEXEME``...), blank lines and ``;;`` comments are ignored; fields are separated
by whitespace, or by tabs in a tab-separated file (a speaker name may then hold spaces). A malformed
SPEAKER line is refused with ``file:line: problem`` (:class:`RTTMError`).

Overlapping speech: where several turns overlap, the stretch goes to the speaker with the longer turn (the
larger overlap with the speech around it: a short back-channel inside a long turn does not cut it); ties go to
the turn that started first. :func:`speaker_intervals` gives these non-overlapping, one-speaker intervals.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from cta_rnn.io_utils import one_line

FIELDS = "SPEAKER <file-id> <chan> <onset> <dur> <NA> <NA> <speaker> <NA> <NA>"
Interval = tuple[float, float, str]


class RTTMError(ValueError):
    """A bad or unusable RTTM file; the one-line message names the file (and line)."""


def _number(path: Path, line: int, what: str, token: str) -> float:
    """A finite, non-negative number of an RTTM field, or RTTMError naming it."""
    try:
        value = float(token)
    except ValueError:
        raise RTTMError(f"{path}:{line}: {what} {token!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise RTTMError(f"{path}:{line}: {what} {token!r} must be a finite number >= 0")
    return value


def _fields(line: str) -> list[str]:
    """An RTTM line's fields: split on whitespace (NIST), or on tabs in a tab-separated file, whose speaker names
    may hold spaces (``Dr Smith``)."""
    if "\t" in line:
        tabbed = [f.strip() for f in line.strip().split("\t")]
        if len(tabbed) >= 8 and all(tabbed[:8]):
            return tabbed
    return line.split()


def read_rttm(path: str | os.PathLike) -> pd.DataFrame:
    """All SPEAKER turns of an RTTM file: columns file_id, channel, start, end, speaker, line (1-based)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RTTMError(f"{path}: no such RTTM file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RTTMError(f"{path}: cannot be read as RTTM text ({one_line(err)})") from None
    rows = []
    for n, raw in enumerate(text.splitlines(), start=1):
        fields = _fields(raw)
        if not fields or fields[0].startswith(";;") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise RTTMError(f"{path}:{n}: SPEAKER line with {len(fields)} fields, need 10 ({FIELDS})")
        onset = _number(path, n, "onset", fields[3])
        dur = _number(path, n, "duration", fields[4])
        rows.append((fields[1], fields[2], onset, onset + dur, fields[7], n))
    return pd.DataFrame(rows, columns=["file_id", "channel", "start", "end", "speaker", "line"])


def turns_for(turns: pd.DataFrame, file_id: str, path: str | os.PathLike) -> pd.DataFrame:
    """The turns of ``file_id`` (sorted by start), or RTTMError listing the file ids the RTTM has."""
    mine = turns[turns.file_id == file_id]
    if mine.empty:
        ids = sorted(turns.file_id.unique())
        have = f"it has {', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}" if ids else "it has no SPEAKER lines"
        raise RTTMError(f"{path}: no SPEAKER lines for file id {file_id!r} ({have}); pass --file_id to choose one")
    return mine.sort_values(["start", "end"], kind="stable").reset_index(drop=True)


def speaker_intervals(turns: pd.DataFrame) -> list[Interval]:
    """Non-overlapping (start, end, speaker) intervals: overlapped stretches go to the longer turn."""
    spans = [(float(a), float(b), str(s)) for a, b, s in zip(turns.start, turns.end, turns.speaker) if b > a]
    spans.sort()
    points = sorted({t for a, b, _ in spans for t in (a, b)})
    out: list[list] = []
    active: list[tuple[float, float, str]] = []
    nxt = 0
    for a, b in zip(points, points[1:]):
        while nxt < len(spans) and spans[nxt][0] <= a:
            active.append(spans[nxt])
            nxt += 1
        active = [t for t in active if t[1] > a]
        if not active:
            continue
        owner = max(active, key=lambda t: (t[1] - t[0], -t[0]))[2]
        if out and out[-1][2] == owner and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b, owner])
    return [(a, b, s) for a, b, s in out]


def intersect(regions: list[tuple[float, float]], intervals: list[Interval]) -> list[Interval]:
    """Speaker intervals cut to the speech regions (both sorted, non-overlapping)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(regions) and j < len(intervals):
        a, b = max(regions[i][0], intervals[j][0]), min(regions[i][1], intervals[j][1])
        if b > a:
            out.append((a, b, intervals[j][2]))
        if regions[i][1] < intervals[j][1]:
            i += 1
        else:
            j += 1
    return out
