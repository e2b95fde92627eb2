"""Atomic writes shared by every stage (the files themselves are owned by cta_rnn.artifacts)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import pandas as pd


def one_line(err: BaseException, plain: tuple[type[BaseException], ...] | None = None) -> str:
    """An error message on one line (the form every entry point prints after ``error: ``); with ``plain``, errors
    of other types (whose message may not say what happened, e.g. a KeyError) are prefixed with their type."""
    text = " ".join(str(err).split())
    if plain is not None and not (isinstance(err, plain) and text):
        return f"{type(err).__name__}: {text}"
    return text or type(err).__name__


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one training epoch: a resumed run repeats the randomness of the epoch it restarts."""
    return int(seed) * 1000 + int(epoch)


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


class LockHeld(RuntimeError):
    """Another live process holds a pid lock; ``pid`` is what it wrote into the lock file."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(f"{path}: held by pid {pid}")
        self.path, self.pid = path, pid


def lock_holder(f: IO[str]) -> str:
    """The pid written in an open lock file ('?' when empty)."""
    f.seek(0)
    return f.read().strip() or "?"


def take_pid_lock(path: str | os.PathLike) -> IO[str]:
    """Take an exclusive advisory lock (``fcntl.flock``) on ``path`` and write our pid into it.

    Released when the returned file is closed, or by the OS when the process dies (a kill leaves the file,
    not the lock). Raises :class:`LockHeld` at once when another process holds it.
    """
    path = Path(path)
    f = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = lock_holder(f)
        f.close()
        raise LockHeld(path, pid) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
