"""Embedding store: per-utterance (layers, frames, dim) float16 arrays in a few memory-mapped shard files.

Layout of a store folder::

    meta.json                 encoder identity, layers, dim, frame rate, max_duration, dtype, manifest checksum
    shards/r<rank>_<k>.bin    raw little-endian float16, utterances back to back (``.part`` while open)
    journal_r<rank>.jsonl     one line per finished utterance: id, shard, offset, frames, crc32
    lock_r<rank>              advisory lock (``flock``) of the process writing that rank, holding its pid
    index.csv                 merged index (written by :func:`finalize`), then
    DONE                      success marker

Writers append data, flush, then append the journal line: after a kill, everything past the last
journal line is garbage and is truncated on restart, so finished utterances are never rewritten.
Several writers (``rank``) can fill one store in parallel; :func:`finalize` merges their journals.
Readers check an utterance's crc32 the first time a process reads it (see docs/store.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import weakref
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from cta_rnn.artifacts import STORE_IDENTITY_KEYS
from cta_rnn.io_utils import LockHeld, atomic_to_csv, atomic_write_json, atomic_write_text, lock_holder, take_pid_lock

DTYPE = np.float16
REBUILD = "rebuild it with `cta-rnn dump ... --force`"


class StoreError(RuntimeError):
    """A store cannot be used or written as asked; the message (one line) says why and what to do."""


class StoreMismatchError(StoreError):
    """An existing store was made by another encoder, layer set, manifest or dump option."""


class StoreLockedError(StoreError):
    """Another live process is writing the same rank of a store."""


class StoreDamagedError(StoreError):
    """A store's bytes do not match its index (checksum, truncated or missing shard)."""


class StoreWriteError(OSError):
    """Writing to the store failed (disk full, I/O error); the message names the store and utterance."""


def manifest_checksum(ids: Iterable[str], durations: Iterable[float] | None = None) -> str:
    """Checksum of the utterance set a store is made for (sorted IDs, durations to 10 ms)."""
    h = hashlib.sha256()
    ids = list(ids)
    pairs = sorted(zip(ids, durations if durations is not None else [0.0] * len(ids)))
    for uid, dur in pairs:
        h.update(f"{uid}\t{round(float(dur), 2):.2f}\n".encode())
    return h.hexdigest()[:16]


def _diff_meta(
    old: dict[str, Any], new: dict[str, Any], keys: Iterable[str] = STORE_IDENTITY_KEYS, prefix: str = ""
) -> list[str]:
    """Human-readable differences of the identity fields of two metas (``encoder.frame_pool: ...``)."""
    diffs = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _diff_meta(a, b, sorted(set(a) | set(b)), f"{prefix}{key}.")
        else:
            diffs.append(f"{prefix}{key}: store has {a!r}, requested {b!r}")
    return diffs


@dataclass
class Entry:
    """Where one utterance lives."""

    shard: str
    offset: int
    frames: int
    crc32: int


# ---------------------------------------------------------------------------------------------- locks

_HELD_LOCKS: weakref.WeakSet = weakref.WeakSet()


def _close_inherited_locks() -> None:
    """In a forked child (DataLoader worker), drop the inherited lock fds so only the writer holds the lock."""
    for f in list(_HELD_LOCKS):
        f.close()  # closing a duplicate fd does not release the parent's flock


os.register_at_fork(after_in_child=_close_inherited_locks)


def _lock_path(root: Path, rank: int) -> Path:
    return root / f"lock_r{rank}"


def acquire_lock(root: str | os.PathLike, rank: int) -> IO[str]:
    """Take the exclusive writer lock of ``rank`` (released on close, or by the OS when the process dies)."""
    root = Path(root)
    try:
        f = take_pid_lock(_lock_path(root, rank))
    except LockHeld as held:
        raise StoreLockedError(
            f"{root}: rank {rank} of this store is being written by another process (pid {held.pid}); "
            "wait for it to finish or stop it"
        ) from None
    _HELD_LOCKS.add(f)
    return f


def held_locks(root: str | os.PathLike) -> list[tuple[int, str]]:
    """(rank, pid) of every writer lock of the store that a live process holds."""
    held = []
    for path in sorted(Path(root).glob("lock_r*")):
        with open(path, encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append((int(path.name.removeprefix("lock_r")), lock_holder(f)))
    return held


# --------------------------------------------------------------------------------------------- writer


def as_float16(hidden: torch.Tensor | np.ndarray) -> np.ndarray:
    """C-contiguous float16 numpy array (a tensor is cast on its own device before the copy)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach().to(dtype=torch.float16).cpu().contiguous().numpy()
    return np.ascontiguousarray(hidden, dtype=DTYPE)


class StoreWriter:
    """Append utterances to a store; resumable after a kill (see module docstring).

    Args:
        root: store folder.
        meta: identity: encoder (dict from ``describe()``), layers, dim, frame_rate, manifest_checksum
            (and max_duration).
        rank: writer id when several processes fill one store; one live writer per rank (``lock_r<rank>``).
        shard_bytes: start a new shard file after this many bytes.
    """

    def __init__(self, root: str | os.PathLike, meta: dict[str, Any], rank: int = 0, shard_bytes: int = 2**30):
        self.root = Path(root)
        self.rank = rank
        self.shard_bytes = shard_bytes
        self.num_layers, self.dim = len(meta["layers"]), int(meta["dim"])
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self._lock = acquire_lock(self.root, rank)
        try:
            self._check_or_write_meta(meta)
            self.journal_path = self.root / f"journal_r{rank}.jsonl"
            self.done: dict[str, Entry] = {}
            self._shard_k = 0
            self._recover()
            self._journal = open(self.journal_path, "a", encoding="utf-8")
            self._open_shard()
        except BaseException:
            self._lock.close()
            raise

    def _check_or_write_meta(self, meta: dict[str, Any]) -> None:
        path = self.root / "meta.json"
        full = {**meta, "dtype": "float16", "format": 1}
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            diffs = _diff_meta(old, full)
            if diffs:
                raise StoreMismatchError(
                    f"{self.root}: existing store does not match: "
                    + "; ".join(diffs)
                    + " (use another dump folder, or --force to rebuild it)"
                )
        else:
            atomic_write_json(path, full)

    def _recover(self) -> None:
        """Read this rank's journal; truncate its open shard to the last committed byte."""
        ends: dict[str, int] = {}
        if self.journal_path.exists():
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
            good = []
            for line in lines:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a kill
                good.append(line)
                self.done[rec["id"]] = Entry(rec["shard"], rec["offset"], rec["frames"], rec["crc32"])
                end = rec["offset"] + rec["frames"] * self.num_layers * self.dim * 2
                ends[rec["shard"]] = max(ends.get(rec["shard"], 0), end)
            if len(good) != len(lines):
                atomic_write_text(self.journal_path, "".join(g + "\n" for g in good))
        mine = sorted((self.root / "shards").glob(f"r{self.rank}_*"))
        for path in mine:
            name = path.name.removesuffix(".part")
            self._shard_k = max(self._shard_k, int(name.split("_")[1].split(".")[0]) + 1)
            if path.suffix == ".part":
                with open(path, "r+b") as f:
                    f.truncate(ends.get(name, 0))
                if ends.get(name, 0) == 0:
                    path.unlink()
                else:
                    os.replace(path, path.with_name(name))

    def _open_shard(self) -> None:
        self.shard_name = f"r{self.rank}_{self._shard_k:05d}.bin"
        self._shard_k += 1
        self._part = self.root / "shards" / (self.shard_name + ".part")
        self._f = open(self._part, "ab")
        self._offset = self._f.tell()

    def _close_shard(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        if self._offset == 0:
            self._part.unlink(missing_ok=True)
        else:
            os.replace(self._part, self._part.with_name(self.shard_name))

    def __contains__(self, uid: str) -> bool:
        return uid in self.done

    def add(self, uid: str, hidden: torch.Tensor | np.ndarray, finite: bool | None = None) -> None:
        """Append one utterance's (layers, frames, dim) hidden states, stored as float16.

        ``finite``: the caller already checked the float16 values (e.g. on the GPU); None checks here.
        Errors name the store and the utterance; an OSError (disk full) becomes a :class:`StoreWriteError`.
        """
        if uid in self.done:
            raise ValueError(f"{self.root}: {uid}: already in the store")
        arr = as_float16(hidden)
        if arr.ndim != 3 or arr.shape[0] != self.num_layers or arr.shape[2] != self.dim:
            raise ValueError(f"{self.root}: {uid}: expected ({self.num_layers}, frames, {self.dim}), got {arr.shape}")
        if not (bool(np.isfinite(arr).all()) if finite is None else finite):
            raise ValueError(f"{self.root}: {uid}: non-finite values in the encoder output (as float16)")
        try:
            self._append(uid, arr)
        except OSError as err:
            reason = err.strerror or str(err)
            raise StoreWriteError(
                err.errno, f"{self.root}: cannot write utterance {uid} to shard {self.shard_name}: {reason}"
            ) from err

    def _append(self, uid: str, arr: np.ndarray) -> None:
        """Data, flush, then the journal line (the commit)."""
        data = arr.reshape(-1).view(np.uint8)
        if self._offset > 0 and self._offset + data.nbytes > self.shard_bytes:
            self._close_shard()
            self._open_shard()
        self._f.write(data)
        self._f.flush()
        entry = Entry(self.shard_name, self._offset, arr.shape[1], zlib.crc32(data))
        self._offset += data.nbytes
        rec = {"id": uid, "shard": entry.shard, "offset": entry.offset, "frames": entry.frames, "crc32": entry.crc32}
        self._journal.write(json.dumps(rec) + "\n")
        self._journal.flush()
        self.done[uid] = entry

    def close(self) -> None:
        """Finalise the open shard (rename .part -> .bin), close the journal, release the lock."""
        try:
            self._close_shard()
        except OSError as err:
            raise StoreWriteError(err.errno, f"{self.root}: cannot close shard {self.shard_name}: {err}") from err
        finally:
            self._journal.close()
            self._lock.close()

    def abort(self) -> None:
        """Close without finalising after an error: the open ``.part`` shard is recovered on the next run."""
        for f in (self._f, self._journal, self._lock):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -------------------------------------------------------------------------------------------- merging


def read_journals(root: str | os.PathLike) -> pd.DataFrame:
    """All journal records of a store (every rank) as a DataFrame."""
    rows = []
    for path in sorted(Path(root).glob("journal_r*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows, columns=["id", "shard", "offset", "frames", "crc32"])


def finalize(root: str | os.PathLike, expected_ids: Sequence[str] | None = None, skipped: Sequence[str] = ()) -> int:
    """Merge journals into ``index.csv`` and write the ``DONE`` marker; returns the utterance count.

    Raises if IDs are duplicated across ranks, or ``expected_ids`` (less ``skipped``) are missing.
    """
    root = Path(root)
    if list((root / "shards").glob("*.part")):
        raise StoreError(f"{root}: unfinished shard files (.part): a writer is still running or was killed")
    index = read_journals(root)
    dup = index["id"][index["id"].duplicated()].tolist()
    if dup:
        why = "two dumps wrote into this folder"
        raise StoreDamagedError(f"{root}: utterances written twice: {dup[:5]} ({why}); {REBUILD}")
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(index["id"]) - set(skipped))
        if missing:
            raise StoreError(f"{root}: {len(missing)} utterances missing from the store, e.g. {missing[:5]}")
    atomic_to_csv(index.sort_values("id"), root / "index.csv")
    atomic_write_text(root / "DONE", f"{len(index)}\n")
    return len(index)


def is_complete(root: str | os.PathLike) -> bool:
    """True when the store has its success marker."""
    return (Path(root) / "DONE").exists()


# -------------------------------------------------------------------------------------------- reading


class EmbeddingStore:
    """Read-only access to a finished store without loading it into RAM (numpy memmaps).

    ``read(uid)`` gives a float16 array, ``store[uid]`` / ``get(uid)`` a float32 tensor, both (layers, frames,
    dim); ``layers`` (encoder layer indices, as recorded in meta) restricts what is returned. The first read
    of an utterance in a process checks its crc32; damage raises :class:`StoreDamagedError` naming the
    store, shard and utterance.
    """

    def __init__(self, root: str | os.PathLike, layers: Sequence[int] | None = None):
        self.root = Path(root)
        if not is_complete(self.root):
            raise FileNotFoundError(f"{self.root}: not a finished embedding store (no DONE marker); run the dump stage")
        self.meta = json.loads((self.root / "meta.json").read_text(encoding="utf-8"))
        self.stored_layers: list[int] = list(self.meta["layers"])
        self.dim = int(self.meta["dim"])
        self.frame_rate = float(self.meta["frame_rate"])
        self.layer_pos = None
        if layers is not None:  # negative entries count from the last stored layer
            layers = [self.stored_layers[k] if -len(self.stored_layers) <= k < 0 else k for k in layers]
        if layers is not None and list(layers) != self.stored_layers:
            absent = [k for k in layers if k not in self.stored_layers]
            if absent:
                raise StoreMismatchError(f"{self.root}: layers {absent} not in the store (has {self.stored_layers})")
            self.layer_pos = [self.stored_layers.index(k) for k in layers]
        self.layers = list(layers) if layers is not None else self.stored_layers
        index = pd.read_csv(self.root / "index.csv", dtype={"id": str}, keep_default_na=False)
        self.index = {r.id: Entry(r.shard, int(r.offset), int(r.frames), int(r.crc32)) for r in index.itertuples()}
        self._maps: dict[str, np.memmap] = {}
        self._verified: set[str] = set()

    @property
    def num_layers(self) -> int:
        """Layers returned per utterance."""
        return len(self.layers)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, uid: str) -> bool:
        return uid in self.index

    def ids(self) -> list[str]:
        """All utterance IDs."""
        return list(self.index)

    def frames(self, uid: str) -> int:
        """Valid frames of one utterance."""
        return self.index[uid].frames

    def _entry(self, uid: str) -> Entry:
        try:
            return self.index[uid]
        except KeyError:
            raise KeyError(f"{uid}: not in the embedding store {self.root}") from None

    def _damaged(self, what: str, e: Entry, uid: str) -> StoreDamagedError:
        where = f"shard {e.shard}, utterance {uid}"
        return StoreDamagedError(f"{self.root}: {what} ({where}): the store is damaged; {REBUILD}")

    def _shard(self, uid: str, e: Entry) -> np.memmap:
        mm = self._maps.get(e.shard)
        if mm is None:
            path = self.root / "shards" / e.shard
            if not path.is_file():
                raise self._damaged("missing shard", e, uid)
            if path.stat().st_size == 0:
                raise self._damaged("truncated shard (0 bytes)", e, uid)
            mm = self._maps[e.shard] = np.memmap(path, dtype=DTYPE, mode="r")
        return mm

    def _flat(self, uid: str) -> np.ndarray:
        """The utterance's float16 values as a 1-D memmap view, bounds-checked."""
        e = self._entry(uid)
        mm = self._shard(uid, e)
        n = len(self.stored_layers) * e.frames * self.dim
        start = e.offset // 2
        if start + n > mm.size:
            need = f"bytes {e.offset}-{e.offset + 2 * n}"
            raise self._damaged(f"truncated shard ({mm.size * 2} bytes, the utterance needs {need})", e, uid)
        return mm[start : start + n]

    def check(self, uid: str) -> None:
        """Check one utterance's bounds and crc32 now (raises :class:`StoreDamagedError`)."""
        e = self._entry(uid)
        crc = zlib.crc32(self._flat(uid))
        if crc != e.crc32:
            raise self._damaged(f"checksum mismatch (crc32 {crc}, index says {e.crc32})", e, uid)
        self._verified.add(uid)

    def _view(self, uid: str, start: int, stop: int | None) -> np.ndarray:
        """(layers, frames, dim) memmap view of frames [start, stop), crc32 checked at the first read."""
        if uid not in self._verified:
            self.check(uid)
        e = self.index[uid]
        raw = self._flat(uid).reshape(len(self.stored_layers), e.frames, self.dim)[:, start:stop]
        return raw[self.layer_pos] if self.layer_pos is not None else raw

    def read(self, uid: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(layers, frames, dim) float16 array (a copy) of frames [start, stop)."""
        return np.array(self._view(uid, start, stop), dtype=DTYPE)

    def get(self, uid: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(layers, frames, dim) float32 tensor, optionally only frames [start, stop)."""
        return torch.from_numpy(self.read(uid, start, stop)).float()  # torch converts float16 ~6x faster than numpy

    __getitem__ = get

    def verify(self) -> list[str]:
        """Integrity check: every entry within its shard and matching its crc32; returns problems found."""
        problems = []
        for uid in self.index:
            try:
                self.check(uid)
            except StoreDamagedError as err:
                problems.append(str(err))
        return problems

    def check_layout(self) -> list[str]:
        """Fast check of the index against the shard files (no checksums): each shard exists and its
        utterances tile it exactly, with nothing missing and nothing past the last one."""
        problems = []
        entries = sorted(self.index.items(), key=lambda kv: (kv[1].shard, kv[1].offset))
        utt_bytes = len(self.stored_layers) * self.dim * 2
        shards: dict[str, list[tuple[str, Entry]]] = {}
        for uid, e in entries:
            shards.setdefault(e.shard, []).append((uid, e))
        for shard, items in shards.items():
            path = self.root / "shards" / shard
            if not path.is_file():
                problems.append(f"shard {shard} is missing (utterance {items[0][0]} and {len(items) - 1} more)")
                continue
            pos = 0
            for uid, e in items:
                if e.offset != pos:
                    problems.append(f"shard {shard}: utterance {uid} starts at byte {e.offset}, expected {pos}")
                pos = e.offset + e.frames * utt_bytes
            size = path.stat().st_size
            if size != pos:
                problems.append(f"shard {shard} has {size} bytes, its index entries end at byte {pos}")
        extra = sorted({p.name for p in (self.root / "shards").glob("*.bin")} - set(shards))
        problems += [f"shard {name} is in no index entry" for name in extra]
        return problems


def check_finished(root: str | os.PathLike, meta: dict[str, Any]) -> EmbeddingStore:
    """Open a finished store, refusing another identity (:class:`StoreMismatchError`, differing keys named) or
    an index that does not match the shard files (:class:`StoreDamagedError`)."""
    store = EmbeddingStore(root)
    diffs = _diff_meta(store.meta, meta)
    if diffs:
        raise StoreMismatchError(
            f"{store.root}: the finished store there does not match: {'; '.join(diffs)} (use another --out, or --force)"
        )
    problems = store.check_layout()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreDamagedError(f"{store.root}: the finished store is damaged: {problems[0]}{more}; {REBUILD}")
    return store


def write_skipped(path: Path, skipped: list[dict[str, str]]) -> None:
    """Add skipped utterances to this rank's list (an earlier run's entries are kept)."""
    old = (
        pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else pd.DataFrame(columns=["ID", "reason"])
    )
    atomic_to_csv(pd.concat([old, pd.DataFrame(skipped)]).drop_duplicates("ID"), path)


def skipped_ids(out_dir: str | os.PathLike) -> list[str]:
    """IDs every rank listed as skipped."""
    out = []
    for path in Path(out_dir).glob("skipped_r*.csv"):
        out += pd.read_csv(path, dtype=str, keep_default_na=False)["ID"].tolist()
    return out
