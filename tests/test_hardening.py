"""Hardening: a real SIGKILL of the dump, full disks, odd paths, same seed twice (see docs/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from float_bounds import assert_within, float16_step, whisper_layer_bounds

from cta_rnn.encoders import build_encoder, load_spec
from cta_rnn.io_utils import atomic_write_text
from cta_rnn.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
ENCODER = ROOT / "recipes" / "shared" / "hparams" / "encoder" / "whisper_tiny_en.yaml"


def speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return 0.3 * np.sin(2 * np.pi * (120 + 40 * seed) * t) * (1 + np.sin(6 * t)) + 0.01 * rng.standard_normal(t.size)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 clips with spaces, unicode and '..' in their names/IDs."""
    d = tmp_path_factory.mktemp("audio with spaces") / "ünïcode"
    d.mkdir()
    rows = []
    for i in range(16):
        p = d / f"clip {i} é.wav"
        sf.write(p, speechlike(1.0 + 0.1 * i, i).astype(np.float32), 16000)
        rows.append({"ID": f"../../evil_{i}" if i % 5 == 0 else f"utt_{i}", "wav": str(p), "duration": 1.0 + 0.1 * i})
    path = d / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def dump_cmd(manifest: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cta_rnn.dump",
        "--manifest",
        str(manifest),
        "--encoder",
        str(ENCODER),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch_seconds",
        "3",
        "--num_workers",
        "0",
    ]


@pytest.mark.slow
def test_dump_sigkill_then_rerun_equals_an_uninterrupted_dump(manifest: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(dump_cmd(manifest, ref), env=env, check=True, capture_output=True, timeout=600)
    p = subprocess.Popen(dump_cmd(manifest, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "journal_r0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert p.poll() is None, "dump finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "DONE").exists()
    done_before = {json.loads(line)["id"]: line for line in journal.read_text().splitlines()}
    out = subprocess.run(dump_cmd(manifest, killed), env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"({len(done_before)} already in the store)" in out.stderr  # nothing finished was recomputed
    after = {json.loads(line)["id"]: line for line in journal.read_text().splitlines()}
    assert all(after[k] == v for k, v in done_before.items())
    a, b = EmbeddingStore(ref), EmbeddingStore(killed)
    assert b.verify() == [] and sorted(a.ids()) == sorted(b.ids())
    # batch composition may differ after the restart: Whisper's float32 rounding (another batch shape), then
    # the store's float16 may hold the adjacent value
    enc = build_encoder(load_spec(ENCODER))  # the dump's conversion, cached
    for uid in a.ids():
        x = a[uid].float()
        bounds = torch.tensor(whisper_layer_bounds(enc, x, keys=1500, extra_depth=2))[:, None, None]
        assert_within(b[uid].float(), x, bounds + float16_step(x), uid)
    # odd IDs are only data: nothing was written outside the store folder
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("evil*"))
    rerun = subprocess.run(dump_cmd(manifest, killed), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "is complete" in rerun.stderr  # idempotent


def test_disk_full_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    atomic_write_text(target, "previous results\n")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new results\n")
    assert target.read_text() == "previous results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_output_path_that_is_not_a_folder_fails_clearly(manifest: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "dump"
    blocker.write_text("a file where the store folder should be")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(dump_cmd(manifest, blocker / "store"), env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "dump" in p.stderr and ("Not a directory" in p.stderr or "exists" in p.stderr)
    assert blocker.read_text().startswith("a file")


def test_same_seed_twice_gives_identical_predictions(tmp_path: Path) -> None:
    from toy_data import toy_manifest, write_toy_fold, write_toy_store

    from cta_rnn.train import main

    m = toy_manifest(n_per_speaker=8, speakers=3)
    write_toy_store(tmp_path / "store", m)
    write_toy_fold(tmp_path / "fold", m, "spk0", "spk1")
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        main(
            [
                str(ROOT / "recipes" / "shared" / "hparams" / "train.yaml"),
                f"--fold_dir={tmp_path / 'fold'}",
                f"--store_dir={tmp_path / 'store'}",
                f"--output_folder={out}",
                "--number_of_epochs=2",
                "--batch_size=4",
                "--device=cpu",
                "--model_kwargs={rnn_hidden: 16, attention_hidden: 8}",
            ]
        )
        outs.append(out)
    a, b = (pd.read_csv(o / "predictions.csv") for o in outs)
    assert a.equals(b)
    ja, jb = (json.loads((o / "test_results.json").read_text())["test"] for o in outs)
    assert ja == jb
