"""Embedding store: per-utterance (layers, frames, dim) float16 arrays in a few memory-mapped shard files.

Layout of a store folder::

    meta.json                 encoder identity, layers, dim, frame rate, dtype, manifest checksum
    shards/r<rank>_<k>.bin    raw little-endian float16, utterances back to back (``.part`` while open)
    journal_r<rank>.jsonl     one line per finished utterance: id, shard, offset, frames, crc32
    index.csv                 merged index (written by :func:`finalize`), then
    DONE                      success marker

Writers append data, flush, then append the journal line: after a kill, everything past the last
journal line is garbage and is truncated on restart, so finished utterances are never rewritten.
Several writers (``rank``) can fill one store in parallel; :func:`finalize` merges their journals.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cta_rnn.io_utils import atomic_to_csv, atomic_write_json, atomic_write_text

DTYPE = np.float16
META_KEYS = ("encoder", "layers", "dim", "frame_rate", "manifest_checksum")


class StoreMismatchError(RuntimeError):
    """An existing store was made by another encoder, layer set or manifest."""


def manifest_checksum(ids: Iterable[str], durations: Iterable[float] | None = None) -> str:
    """Checksum of the utterance set a store is made for (sorted IDs, durations to 10 ms)."""
    h = hashlib.sha256()
    pairs = sorted(zip(ids, durations if durations is not None else [0.0] * 10**9))
    for uid, dur in pairs:
        h.update(f"{uid}\t{round(float(dur), 2):.2f}\n".encode())
    return h.hexdigest()[:16]


def _diff_meta(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences of the identity fields of two metas."""
    diffs = []
    for key in META_KEYS:
        if json.dumps(old.get(key), sort_keys=True) != json.dumps(new.get(key), sort_keys=True):
            diffs.append(f"{key}: store has {old.get(key)!r}, requested {new.get(key)!r}")
    return diffs


@dataclass
class Entry:
    """Where one utterance lives."""

    shard: str
    offset: int
    frames: int
    crc32: int


class StoreWriter:
    """Append utterances to a store; resumable after a kill (see module docstring).

    Args:
        root: store folder.
        meta: identity: encoder (dict from ``describe()``), layers, dim, frame_rate, manifest_checksum.
        rank: writer id when several processes fill one store.
        shard_bytes: start a new shard file after this many bytes.
    """

    def __init__(self, root: str | os.PathLike, meta: dict[str, Any], rank: int = 0, shard_bytes: int = 2**30):
        self.root = Path(root)
        self.rank = rank
        self.shard_bytes = shard_bytes
        self.num_layers, self.dim = len(meta["layers"]), int(meta["dim"])
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self._check_or_write_meta(meta)
        self.journal_path = self.root / f"journal_r{rank}.jsonl"
        self.done: dict[str, Entry] = {}
        self._shard_k = 0
        self._recover()
        self._journal = open(self.journal_path, "a", encoding="utf-8")
        self._open_shard()

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

    def add(self, uid: str, hidden: torch.Tensor | np.ndarray) -> None:
        """Append one utterance's (layers, frames, dim) hidden states."""
        if uid in self.done:
            raise ValueError(f"{uid}: already in the store")
        arr = hidden.detach().cpu().numpy() if isinstance(hidden, torch.Tensor) else np.asarray(hidden)
        if arr.ndim != 3 or arr.shape[0] != self.num_layers or arr.shape[2] != self.dim:
            raise ValueError(f"{uid}: expected ({self.num_layers}, frames, {self.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{uid}: non-finite values in the encoder output")
        data = np.ascontiguousarray(arr, dtype=DTYPE).tobytes()
        if self._offset > 0 and self._offset + len(data) > self.shard_bytes:
            self._close_shard()
            self._open_shard()
        self._f.write(data)
        self._f.flush()
        entry = Entry(self.shard_name, self._offset, arr.shape[1], zlib.crc32(data))
        self._offset += len(data)
        rec = {"id": uid, "shard": entry.shard, "offset": entry.offset, "frames": entry.frames, "crc32": entry.crc32}
        self._journal.write(json.dumps(rec) + "\n")
        self._journal.flush()
        self.done[uid] = entry

    def close(self) -> None:
        """Finalise the open shard (rename .part -> .bin) and close the journal."""
        self._close_shard()
        self._journal.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        raise RuntimeError(f"{root}: unfinished shard files (.part): a writer is still running or was killed")
    index = read_journals(root)
    dup = index["id"][index["id"].duplicated()].tolist()
    if dup:
        raise RuntimeError(f"{root}: utterances written twice: {dup[:5]}")
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(index["id"]) - set(skipped))
        if missing:
            raise RuntimeError(f"{root}: {len(missing)} utterances missing from the store, e.g. {missing[:5]}")
    atomic_to_csv(index.sort_values("id"), root / "index.csv")
    atomic_write_text(root / "DONE", f"{len(index)}\n")
    return len(index)


def is_complete(root: str | os.PathLike) -> bool:
    """True when the store has its success marker."""
    return (Path(root) / "DONE").exists()


class EmbeddingStore:
    """Read-only access to a finished store without loading it into RAM (numpy memmaps).

    ``store[uid]`` gives a float32 tensor (layers, frames, dim); ``layers`` (encoder layer indices, as
    recorded in meta) restricts what is returned.
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

    def _raw(self, uid: str) -> np.ndarray:
        try:
            e = self.index[uid]
        except KeyError:
            raise KeyError(f"{uid}: not in the embedding store {self.root}") from None
        mm = self._maps.get(e.shard)
        if mm is None:
            mm = self._maps[e.shard] = np.memmap(self.root / "shards" / e.shard, dtype=DTYPE, mode="r")
        n = len(self.stored_layers) * e.frames * self.dim
        start = e.offset // 2
        return mm[start : start + n].reshape(len(self.stored_layers), e.frames, self.dim)

    def get(self, uid: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """(layers, frames, dim) float32 tensor, optionally only frames [start, stop)."""
        raw = self._raw(uid)
        raw = raw[self.layer_pos] if self.layer_pos is not None else raw
        return torch.from_numpy(np.array(raw[:, start:stop], dtype=np.float32))

    __getitem__ = get

    def verify(self) -> list[str]:
        """Integrity check: every entry within its shard and matching its crc32; returns problems found."""
        problems = []
        for uid, e in self.index.items():
            try:
                raw = self._raw(uid)
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"{uid}: {err}")
                continue
            if raw.size != len(self.stored_layers) * e.frames * self.dim:
                problems.append(f"{uid}: truncated shard {e.shard}")
            elif zlib.crc32(np.ascontiguousarray(raw).tobytes()) != e.crc32:
                problems.append(f"{uid}: checksum mismatch in {e.shard}")
        return problems
