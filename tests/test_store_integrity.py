"""Store integrity (issue 15): one writer per rank, damage seen when the store is read, identity, disk full."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import STORE_META

from cta_rnn.store import (
    EmbeddingStore,
    StoreDamagedError,
    StoreLockedError,
    StoreMismatchError,
    StoreWriteError,
    StoreWriter,
    check_finished,
    finalize,
    held_locks,
)

ROOT = Path(__file__).resolve().parents[1]
META = STORE_META
HOLDER = """
import json, sys, time
from cta_rnn.store import StoreWriter
w = StoreWriter(sys.argv[1], json.loads(sys.argv[2]))
print("holding", flush=True)
time.sleep(120)
"""


def utterances(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"u{i:02d}": torch.randn(3, 5 + 3 * i, 8, generator=g) for i in range(n)}


def make_store(root: Path, n: int = 6, shard_bytes: int = 2**30) -> dict[str, torch.Tensor]:
    xs = utterances(n)
    with StoreWriter(root, META, shard_bytes=shard_bytes) as w:
        for uid, x in xs.items():
            w.add(uid, x)
    finalize(root, list(xs))
    return xs


def hold_lock(root: Path) -> subprocess.Popen:
    """A real second process holding rank 0 of the store at ``root``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), json.dumps(META)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "holding"
    return p


def test_second_writer_of_a_rank_is_refused_naming_pid_and_folder(tmp_path: Path) -> None:
    p = hold_lock(tmp_path)
    try:
        with pytest.raises(StoreLockedError) as err:
            StoreWriter(tmp_path, META)
        msg = str(err.value)
        assert f"pid {p.pid}" in msg and str(tmp_path) in msg and "\n" not in msg
        assert held_locks(tmp_path) == [(0, str(p.pid))]
        StoreWriter(tmp_path, META, rank=1).close()  # another rank is free
    finally:
        p.kill()  # SIGKILL: the OS releases the lock
        p.wait()
    assert held_locks(tmp_path) == []
    with StoreWriter(tmp_path, META) as w:  # the killed writer's store resumes
        w.add("a", torch.zeros(3, 2, 8))
    assert held_locks(tmp_path) == []  # released on close


def test_read_gives_float16_with_layer_selection_and_crop(tmp_path: Path) -> None:
    xs = make_store(tmp_path)
    store = EmbeddingStore(tmp_path, layers=[4, 0])
    out = store.read("u03", 2, 6)
    assert out.dtype == np.float16 and type(out) is np.ndarray and out.flags.writeable
    assert np.array_equal(out, xs["u03"][[2, 0], 2:6].half().numpy())
    assert torch.equal(store.get("u03", 2, 6), xs["u03"][[2, 0], 2:6].half().float())


def flip_byte(root: Path, offset: int) -> Path:
    shard = next((root / "shards").glob("*.bin"))
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))
    return shard


def test_flipped_bit_is_seen_by_the_first_read(tmp_path: Path) -> None:
    make_store(tmp_path)
    store = EmbeddingStore(tmp_path)
    store.get("u01")  # checked once, then remembered
    shard = flip_byte(tmp_path, 10)  # inside u00
    with pytest.raises(StoreDamagedError) as err:
        store.get("u00", 0, 2)  # even a crop checks the whole utterance the first time
    msg = str(err.value)
    assert "checksum mismatch" in msg and str(tmp_path) in msg and shard.name in msg and "u00" in msg
    assert "--force" in msg and "\n" not in msg
    with pytest.raises(StoreDamagedError, match="u00"):
        store.read("u00")
    assert store.get("u01").shape == (3, 8, 8)
    assert [p for p in store.verify() if "u00" in p] and len(store.verify()) == 1


def test_truncated_shard_names_store_shard_and_utterance(tmp_path: Path) -> None:
    make_store(tmp_path)
    shard = next((tmp_path / "shards").glob("*.bin"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 10)
    store = EmbeddingStore(tmp_path)
    assert store.get("u00").shape == (3, 5, 8)  # earlier utterances are intact
    with pytest.raises(StoreDamagedError) as err:
        store.get("u05")
    msg = str(err.value)
    assert "truncated shard" in msg and shard.name in msg and "u05" in msg and str(tmp_path) in msg
    assert "reshape" not in msg
    assert any("truncated" in p for p in store.verify())
    with open(shard, "r+b") as f:
        f.truncate(0)
    with pytest.raises(StoreDamagedError, match="truncated shard"):
        EmbeddingStore(tmp_path).get("u00")


def test_missing_shard_names_store_shard_and_utterance(tmp_path: Path) -> None:
    make_store(tmp_path, shard_bytes=1000)
    shard = sorted((tmp_path / "shards").glob("*.bin"))[-1]
    shard.unlink()
    store = EmbeddingStore(tmp_path)
    with pytest.raises(StoreDamagedError, match=f"missing shard.*{shard.name}.*u05"):
        store.get("u05")
    assert any("missing" in p for p in store.verify())


def test_index_is_checked_against_shard_sizes(tmp_path: Path) -> None:
    make_store(tmp_path)
    assert check_finished(tmp_path, {**META, "dtype": "float16"}).check_layout() == []
    shard = next((tmp_path / "shards").glob("*.bin"))
    with open(shard, "ab") as f:
        f.write(b"\0" * 16)  # bytes no entry accounts for
    with pytest.raises(StoreDamagedError, match=f"damaged: shard {shard.name} has .* bytes.*--force"):
        check_finished(tmp_path, META)
    with pytest.raises(StoreMismatchError, match="max_duration: store has None, requested 1.0"):
        check_finished(tmp_path, {**META, "max_duration": 1.0})


def test_max_duration_is_part_of_the_identity(tmp_path: Path) -> None:
    StoreWriter(tmp_path, {**META, "max_duration": 1.0}).close()
    with pytest.raises(StoreMismatchError, match="max_duration: store has 1.0, requested None"):
        StoreWriter(tmp_path, META)


def test_utterances_written_twice_says_force_is_the_way_out(tmp_path: Path) -> None:
    xs = utterances(2)
    for rank in (0, 1):
        with StoreWriter(tmp_path, META, rank=rank) as w:
            w.add("u00", xs["u00"])
    with pytest.raises(RuntimeError, match="written twice.*--force"):
        finalize(tmp_path)


def test_full_disk_names_the_store_and_keeps_it_resumable(tmp_path: Path) -> None:
    xs = utterances(3)
    w = StoreWriter(tmp_path, META)
    w.add("u00", xs["u00"])
    w._f.close()
    w._f = open("/dev/full", "ab")  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(StoreWriteError) as err:
        with w:
            w.add("u01", xs["u01"])
    assert str(tmp_path) in str(err.value) and "u01" in str(err.value) and "No space left" in str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == 28
    with StoreWriter(tmp_path, META) as w:  # space again: resumes after the last committed utterance
        assert list(w.done) == ["u00"]
        w.add("u01", xs["u01"])
    finalize(tmp_path)
    assert EmbeddingStore(tmp_path).verify() == []
