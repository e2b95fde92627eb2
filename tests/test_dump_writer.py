"""The dump's writer thread and the dump command's refusals (issues 11 and 15), with the stand-in FrameEncoder."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_dump import FrameEncoder, make_corpus

import cta_rnn.dump as dump_mod
from cta_rnn.dump import dump, main, maybe_finalize
from cta_rnn.store import EmbeddingStore, StoreMismatchError, StoreWriteError, StoreWriter, held_locks

ROOT = Path(__file__).resolve().parents[1]
ENCODER_YAML = ROOT / "recipes" / "shared" / "hparams" / "encoder" / "whisper_tiny_en.yaml"
SLOW_DUMP = """
import sys, time
import pandas as pd
import cta_rnn.store as store
from cta_rnn.dump import dump
from test_dump import FrameEncoder

real = store.StoreWriter.add
def slow_add(self, *a, **k):
    time.sleep(0.4)
    real(self, *a, **k)
store.StoreWriter.add = slow_add
dump(pd.read_csv(sys.argv[1]), FrameEncoder(), sys.argv[2], batch_seconds=0.5, num_workers=1, queue_batches=1)
"""


@pytest.fixture()
def corpus(tmp_path: Path) -> pd.DataFrame:
    return make_corpus(tmp_path)


def reference(corpus: pd.DataFrame, out: Path) -> EmbeddingStore:
    dump(corpus, FrameEncoder(), out, batch_seconds=1.5, num_workers=0)
    assert maybe_finalize(corpus, out, 1)
    return EmbeddingStore(out)


def same_store(a: EmbeddingStore, b: EmbeddingStore) -> bool:
    return sorted(a.ids()) == sorted(b.ids()) and all(torch.equal(a[i], b[i]) for i in a.ids())


def test_error_in_the_writer_thread_stops_the_dump_with_that_error(
    corpus: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = RuntimeError("disk controller on fire")
    real, calls = StoreWriter.add, []

    def failing_add(self, uid, *a, **k):
        calls.append(uid)
        if len(calls) == 3:
            raise boom
        real(self, uid, *a, **k)

    monkeypatch.setattr(StoreWriter, "add", failing_add)
    out = tmp_path / "s"
    with pytest.raises(RuntimeError) as err:
        dump(corpus, FrameEncoder(), out, batch_seconds=1.5, num_workers=0)
    assert err.value is boom
    monkeypatch.setattr(StoreWriter, "add", real)
    summary = dump(corpus, FrameEncoder(), out, batch_seconds=1.5, num_workers=0)
    assert summary["already_done"] == 2 and summary["encoded"] == 4  # resumable after the error
    assert maybe_finalize(corpus, out, 1)
    assert same_store(reference(corpus, tmp_path / "ref"), EmbeddingStore(out))


def test_full_disk_in_the_writer_thread_names_store_and_utterance(
    corpus: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = StoreWriter._open_shard

    def open_full_disk(self) -> None:
        real_open(self)
        self._f.close()
        self._f = open("/dev/full", "ab")  # writes fail with ENOSPC

    monkeypatch.setattr(StoreWriter, "_open_shard", open_full_disk)
    out = tmp_path / "s"
    with pytest.raises(StoreWriteError) as err:
        dump(corpus, FrameEncoder(), out, num_workers=0)
    first = corpus.sort_values("duration", ascending=False)["ID"].iloc[0]
    assert str(out) in str(err.value) and first in str(err.value) and err.value.errno == 28
    monkeypatch.setattr(StoreWriter, "_open_shard", real_open)
    dump(corpus, FrameEncoder(), out, num_workers=0)
    assert maybe_finalize(corpus, out, 1) and EmbeddingStore(out).verify() == []


class Overflowing(FrameEncoder):
    """Finite float32 states that overflow float16 for one utterance."""

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, frames = super().encode(wavs, lengths)
        hidden[0, 1, 0, 0] = 1e6
        return hidden, frames


def test_values_not_finite_in_float16_are_refused(corpus: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{tmp_path / 's'}: u5: non-finite values"):
        dump(corpus, Overflowing(), tmp_path / "s", num_workers=0)


def test_sigkill_while_the_writer_thread_is_behind_then_resume(corpus: pd.DataFrame, tmp_path: Path) -> None:
    """Killed with batches encoded but not yet written, audio workers alive: the rerun starts at once."""
    manifest = tmp_path / "manifest.csv"
    corpus.to_csv(manifest, index=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", SLOW_DUMP, str(manifest), str(out)], env=env)
    journal = out / "journal_r0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert p.poll() is None, "dump finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = journal.read_text().splitlines()
    assert 2 <= len(before) < len(corpus)
    assert held_locks(out) == []  # the orphaned audio worker does not keep the writer lock
    summary = dump(corpus, FrameEncoder(), out, batch_seconds=1.5, num_workers=0)
    assert summary["already_done"] == len(before) and journal.read_text().splitlines()[: len(before)] == before
    assert maybe_finalize(corpus, out, 1)
    store = EmbeddingStore(out)
    assert store.verify() == [] and same_store(reference(corpus, tmp_path / "ref"), store)


def crash_after(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the dump stop with KeyboardInterrupt after ``n`` batches (as a kill would)."""
    real = dump_mod.iterate_batches

    def crashing(loader):
        for i, batch in enumerate(real(loader)):
            if i == n:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(dump_mod, "iterate_batches", crashing)


def test_resume_without_the_max_duration_of_the_killed_dump_is_refused(
    corpus: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        dump(corpus, FrameEncoder(), tmp_path / "s", batch_seconds=1.5, num_workers=0, max_duration=1.0)
    monkeypatch.undo()
    with pytest.raises(StoreMismatchError, match="max_duration: store has 1.0, requested None"):
        dump(corpus, FrameEncoder(), tmp_path / "s", num_workers=0)
    assert dump(corpus, FrameEncoder(), tmp_path / "s", num_workers=0, max_duration=1.0)["already_done"] > 0


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, encoder: FrameEncoder | None = None) -> None:
    """``cta-rnn dump`` in-process, its encoder replaced by the stand-in."""
    monkeypatch.setattr("cta_rnn.encoders.build_encoder", lambda spec, device: encoder or FrameEncoder())
    main(["--encoder", str(ENCODER_YAML), "--num_workers", "0", "--device", "cpu", *args])


def one_line_exit(args: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    with pytest.raises(SystemExit) as err:
        run_main(args, monkeypatch)
    msg = str(err.value.code)
    assert "\n" not in msg
    return msg


def test_rerun_on_a_finished_store_checks_identity_and_shard_sizes(
    corpus: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, out = tmp_path / "manifest.csv", tmp_path / "store"
    corpus.to_csv(manifest, index=False)
    args = ["--manifest", str(manifest), "--out", str(out)]
    caplog.set_level(logging.INFO, logger="cta_rnn.dump")
    run_main(args, monkeypatch)
    run_main(args, monkeypatch)
    assert "is complete" in caplog.text
    msg = one_line_exit([*args, "--max_duration", "1"], monkeypatch)
    assert "max_duration: store has None, requested 1.0" in msg
    shard = next((out / "shards").glob("*.bin"))
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 2)
    msg = one_line_exit(args, monkeypatch)
    assert "damaged" in msg and shard.name in msg and "--force" in msg
    run_main([*args, "--force"], monkeypatch)
    assert EmbeddingStore(out).verify() == []


def test_empty_manifest_is_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "empty.csv"
    manifest.write_text("ID,wav,duration\n")
    msg = one_line_exit(["--manifest", str(manifest), "--out", str(tmp_path / "s")], monkeypatch)
    assert "no utterances" in msg and str(manifest) in msg
    assert not (tmp_path / "s" / "DONE").exists()
    manifest.write_text("")
    assert "no utterances" in one_line_exit(["--manifest", str(manifest), "--out", str(tmp_path / "s")], monkeypatch)
    with pytest.raises(ValueError, match="no utterances"):
        dump(pd.DataFrame(columns=["ID", "wav", "duration"]), FrameEncoder(), tmp_path / "s2", num_workers=0)


def test_force_does_not_delete_a_store_being_written(
    corpus: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_store_integrity import META, hold_lock

    manifest, out = tmp_path / "manifest.csv", tmp_path / "store"
    corpus.to_csv(manifest, index=False)
    p = hold_lock(out)
    try:
        before = sorted(x.name for x in out.iterdir())
        msg = one_line_exit(["--manifest", str(manifest), "--out", str(out), "--force"], monkeypatch)
        assert f"pid {p.pid}" in msg and str(out) in msg and "not deleted" in msg
        assert set(before) <= {x.name for x in out.iterdir()} and (out / "shards").is_dir()
        assert json.loads((out / "meta.json").read_text())["manifest_checksum"] == META["manifest_checksum"]
        msg = one_line_exit(["--manifest", str(manifest), "--out", str(out)], monkeypatch)  # a second dump
        assert f"pid {p.pid}" in msg and str(out) in msg and "being written by another process" in msg
    finally:
        p.kill()
        p.wait()
