"""Small I/O helpers shared by every stage: atomic writes and the manifest contract."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST_COLUMNS = ("ID", "wav", "duration", "emotion", "speaker", "session", "gender")
"""Columns every corpus manifest has (corpora may add dialog, condition, text, ...)."""


def _umask() -> int:
    """The process umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_to_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically write a DataFrame as CSV without the index."""
    atomic_write_text(path, df.to_csv(index=False))


def read_manifest(path: str | os.PathLike, required: Iterable[str] = ("ID", "wav", "duration")) -> pd.DataFrame:
    """Read a manifest CSV, checking required columns and unique IDs; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype={"ID": str, "speaker": str, "session": str}, keep_default_na=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    dup = df["ID"][df["ID"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate IDs {dup[:5]}{' ...' if len(dup) > 5 else ''}")
    return df
