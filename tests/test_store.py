"""Embedding store: round trip, layer selection, resume after a kill, integrity, refusal of a foreign store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import STORE_META

from cta_rnn.store import EmbeddingStore, StoreMismatchError, StoreWriter, finalize

META = STORE_META


def utterances(n: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"u{i:02d}": torch.randn(3, 5 + 3 * i, 8, generator=g) for i in range(n)}


def test_round_trip_float16_layers_and_crop(tmp_path: Path) -> None:
    xs = utterances()
    with StoreWriter(tmp_path, META, shard_bytes=2000) as w:
        for uid, x in xs.items():
            w.add(uid, x)
    assert finalize(tmp_path, list(xs)) == len(xs)
    store = EmbeddingStore(tmp_path)
    assert len(list((tmp_path / "shards").glob("*.bin"))) > 1  # several shards
    for uid, x in xs.items():
        assert torch.equal(store[uid], x.half().float())
        assert store.frames(uid) == x.shape[1]
    sub = EmbeddingStore(tmp_path, layers=[4, 0])
    assert torch.equal(sub.get("u03", 2, 6), xs["u03"][[2, 0], 2:6].half().float())
    with pytest.raises(StoreMismatchError, match=r"layers \[1\] not in the store"):
        EmbeddingStore(tmp_path, layers=[1])
    assert store.verify() == []


def test_store_bytes_are_float16_valid_frames_only(tmp_path: Path) -> None:
    xs = utterances(4)
    with StoreWriter(tmp_path, META) as w:
        for uid, x in xs.items():
            w.add(uid, x)
    finalize(tmp_path)
    total = sum(p.stat().st_size for p in (tmp_path / "shards").glob("*.bin"))
    assert total == sum(x.numel() * 2 for x in xs.values())


def test_resume_after_kill_gives_the_same_store(tmp_path: Path) -> None:
    xs = utterances()
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    with StoreWriter(ref, META, shard_bytes=3000) as w:
        for uid, x in xs.items():
            w.add(uid, x)
    finalize(ref)

    w = StoreWriter(crashed, META, shard_bytes=3000)
    for uid in list(xs)[:7]:
        w.add(uid, xs[uid])
    # simulate SIGKILL mid-write: half an utterance's bytes and a torn journal line, never closed
    w._f.write(b"\x00" * 100)
    w._f.flush()
    w._journal.write('{"id": "u07", "sha')
    w._journal.flush()
    del w
    w = StoreWriter(crashed, META, shard_bytes=3000)
    assert sorted(w.done) == sorted(list(xs)[:7])  # finished ones are kept, not recomputed
    for uid in list(xs)[7:]:
        w.add(uid, xs[uid])
    w.close()
    finalize(crashed, list(xs))
    a, b = EmbeddingStore(ref), EmbeddingStore(crashed)
    assert b.verify() == []
    for uid in xs:
        assert torch.equal(a[uid], b[uid])


def test_refuses_a_store_of_another_encoder_or_layers(tmp_path: Path) -> None:
    StoreWriter(tmp_path, META).close()
    with pytest.raises(StoreMismatchError, match="layers: store has \\[0, 2, 4\\], requested \\[0, 1\\]"):
        StoreWriter(tmp_path, {**META, "layers": [0, 1]})
    with pytest.raises(StoreMismatchError, match="encoder"):
        StoreWriter(tmp_path, {**META, "encoder": {"backend": "other"}})
    with pytest.raises(StoreMismatchError, match="manifest_checksum"):
        StoreWriter(tmp_path, {**META, "manifest_checksum": "zzz"})


def test_integrity_check_finds_corruption(tmp_path: Path) -> None:
    xs = utterances(3)
    with StoreWriter(tmp_path, META) as w:
        for uid, x in xs.items():
            w.add(uid, x)
    finalize(tmp_path)
    shard = next((tmp_path / "shards").glob("*.bin"))
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert any("checksum mismatch" in p for p in EmbeddingStore(tmp_path).verify())


def test_two_ranks_merge_and_missing_ids_are_refused(tmp_path: Path) -> None:
    xs = utterances(6)
    ids = list(xs)
    for rank in (0, 1):
        with StoreWriter(tmp_path, META, rank=rank) as w:
            for uid in ids[rank::2]:
                w.add(uid, xs[uid])
    with pytest.raises(RuntimeError, match="missing"):
        finalize(tmp_path, ids + ["nope"])
    assert finalize(tmp_path, ids) == 6
    store = EmbeddingStore(tmp_path)
    assert all(torch.equal(store[u], xs[u].half().float()) for u in ids)
    assert json.loads((tmp_path / "meta.json").read_text())["dtype"] == "float16"


def test_rejects_bad_arrays(tmp_path: Path) -> None:
    with StoreWriter(tmp_path, META) as w:
        with pytest.raises(ValueError, match="expected \\(3, frames, 8\\)"):
            w.add("x", np.zeros((2, 4, 8)))
        with pytest.raises(ValueError, match="non-finite"):
            w.add("y", np.full((3, 4, 8), np.nan))
    with pytest.raises(FileNotFoundError, match="no DONE marker"):
        EmbeddingStore(tmp_path)
