"""Synthetic layer-wise embeddings for tests: the class is carried by one layer only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cta_rnn.io_utils import atomic_to_csv
from cta_rnn.store import StoreWriter, finalize, manifest_checksum

LABELS = ["neu", "hap", "ang", "sad"]
ROOT = Path(__file__).resolve().parents[1]
STORE_META = {
    "encoder": {"backend": "toy", "name": "toy"},
    "layers": [0, 2, 4],
    "dim": 8,
    "frame_rate": 50.0,
    "manifest_checksum": "abc",
}
"""A small store identity for store tests (3 of 5 layers)."""


def train_process(argv: list[str], stderr: int = subprocess.STDOUT, **kw) -> subprocess.Popen:
    """``python -m cta_rnn.train argv`` in a child process (one thread), stdout piped as text."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "cta_rnn.train", *argv],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        **kw,
    )


def toy_utterance(
    label: int, rng: np.random.Generator, layers: int, dim: int, frames: int, signal_layer: int, strength: float = 1.5
) -> np.ndarray:
    """(layers, frames, dim) noise; layer ``signal_layer`` carries a class-specific mean on some frames."""
    x = rng.normal(size=(layers, frames, dim)).astype(np.float32)
    proto = np.zeros(dim, dtype=np.float32)
    proto[label * (dim // 4) : (label + 1) * (dim // 4)] = strength
    x[signal_layer] += proto
    return x


def toy_manifest(n_per_speaker: int = 24, speakers: int = 6, seed: int = 0) -> pd.DataFrame:
    """Speakers s0..s{n-1} in sessions of two (F, M), balanced labels, varying durations."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(speakers):
        for i in range(n_per_speaker):
            rows.append(
                {
                    "ID": f"spk{s}_utt{i:03d}",
                    "wav": f"/nonexistent/spk{s}_{i}.wav",
                    "duration": round(float(rng.uniform(0.4, 1.2)), 2),
                    "emotion": LABELS[i % 4],
                    "speaker": f"spk{s}",
                    "session": s // 2 + 1,
                    "gender": "FM"[s % 2],
                }
            )
    return pd.DataFrame(rows)


def with_dimensions(manifest: pd.DataFrame, seed: int = 0, missing_every: int = 7) -> pd.DataFrame:
    """``manifest`` with arousal / valence / dominance ratings: arousal follows the class (the toy features carry
    it), valence half class, half noise, dominance noise; every ``missing_every``-th dominance left empty."""
    rng = np.random.default_rng(seed)
    cls = manifest["emotion"].map(LABELS.index).to_numpy(float)
    out = manifest.copy()
    out["arousal"] = np.round(1.5 + cls + rng.normal(0, 0.3, len(out)), 2)
    out["valence"] = np.round(3 + 0.5 * (cls - 1.5) + rng.normal(0, 0.5, len(out)), 2)
    dominance = np.round(3 + rng.normal(0, 0.5, len(out)), 2).astype(object)
    dominance[::missing_every] = ""
    out["dominance"] = dominance
    return out


def write_toy_store(
    root: Path,
    manifest: pd.DataFrame,
    layers: int = 3,
    dim: int = 16,
    frame_rate: float = 50.0,
    signal_layer: int = 1,
    seed: int = 0,
) -> Path:
    """A finished embedding store for ``manifest`` with synthetic features."""
    rng = np.random.default_rng(seed)
    meta = {
        "encoder": {"backend": "toy", "name": "toy"},
        "layers": list(range(layers)),
        "dim": dim,
        "frame_rate": frame_rate,
        "manifest_checksum": manifest_checksum(manifest["ID"], manifest["duration"]),
    }
    with StoreWriter(root, meta) as w:
        for r in manifest.itertuples():
            frames = max(2, int(r.duration * frame_rate))
            w.add(
                r.ID, torch.from_numpy(toy_utterance(LABELS.index(r.emotion), rng, layers, dim, frames, signal_layer))
            )
    finalize(root, manifest["ID"].tolist())
    return root


def write_toy_fold(fold_dir: Path, manifest: pd.DataFrame, test_speaker: str, valid_speaker: str) -> Path:
    """train/valid/test CSVs for one leave-one-speaker-out fold."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    test = manifest[manifest.speaker == test_speaker]
    valid = manifest[manifest.speaker == valid_speaker]
    train = manifest[~manifest.speaker.isin([test_speaker, valid_speaker])]
    for name, df in (("train", train), ("valid", valid), ("test", test)):
        atomic_to_csv(df, fold_dir / f"{name}.csv")
    return fold_dir


def toy_training_argv(
    root: Path, out: Path, *overrides: str, n_per_speaker: int = 8, dimensions: bool = False
) -> list[str]:
    """Write a 4-speaker toy store + fold under ``root``; the ``cta_rnn.train`` arguments of a small CPU run
    (``dimensions``: the fold CSVs carry ratings, see :func:`with_dimensions`)."""
    m = toy_manifest(n_per_speaker=n_per_speaker, speakers=4)
    if dimensions:
        m = with_dimensions(m)
    write_toy_store(root / "store", m)
    write_toy_fold(root / "fold1", m, "spk0", "spk1")
    return [
        str(ROOT / "recipes" / "shared" / "hparams" / "train.yaml"),
        f"--fold_dir={root / 'fold1'}",
        f"--store_dir={root / 'store'}",
        f"--output_folder={out}",
        "--device=cpu",
        "--model_kwargs={rnn_hidden: 32, attention_hidden: 16, classifier_hidden: 32}",
        *overrides,
    ]


def train_toy_fold(root: Path, *overrides: str, n_per_speaker: int = 8, speakers: int = 3) -> Path:
    """Train one small toy fold (test spk0, validate spk1) under ``root``; its folder ``exp/cta_rnn_toy/fold1``."""
    from cta_rnn.train import main

    m = toy_manifest(n_per_speaker=n_per_speaker, speakers=speakers)
    write_toy_store(root / "store", m)
    write_toy_fold(root / "fold_csv", m, "spk0", "spk1")
    out = root / "exp" / "cta_rnn_toy" / "fold1"
    argv = [
        str(ROOT / "recipes" / "shared" / "hparams" / "train.yaml"),
        f"--fold_dir={root / 'fold_csv'}",
        f"--store_dir={root / 'store'}",
        f"--output_folder={out}",
        "--max_train_seconds=2.0",
        "--device=cpu",
        "--model_kwargs={rnn_hidden: 16, attention_hidden: 8, classifier_hidden: 16}",
        *overrides,
    ]
    assert main(argv) == 0
    return out
