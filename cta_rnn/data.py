"""SpeechBrain datasets over the embedding store: one fold's train/valid/test CSVs -> DynamicItemDatasets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder

from cta_rnn.io_utils import read_manifest
from cta_rnn.store import EmbeddingStore

SPLITS = ("train", "valid", "test")


def read_fold(fold_dir: str | os.PathLike, store: EmbeddingStore) -> dict[str, pd.DataFrame]:
    """Read train/valid/test CSVs of a fold, dropping (with a count) utterances the store skipped."""
    fold_dir = Path(fold_dir)
    out = {}
    for split in SPLITS:
        df = read_manifest(fold_dir / f"{split}.csv", required=("ID", "emotion", "speaker"))
        missing = ~df["ID"].isin(store.index.keys())
        if missing.all():
            raise ValueError(f"{fold_dir / f'{split}.csv'}: none of its utterances are in the store {store.root}")
        if missing.any():
            skipped = set()
            for path in store.root.glob("skipped_r*.csv"):
                skipped |= set(pd.read_csv(path, dtype=str, keep_default_na=False)["ID"])
            unexplained = sorted(set(df["ID"][missing]) - skipped)
            if unexplained:
                raise ValueError(
                    f"{fold_dir / f'{split}.csv'}: {len(unexplained)} utterances not in the store "
                    f"{store.root}, e.g. {unexplained[:3]} (was it dumped from this manifest?)"
                )
            df = df[~missing]
        out[split] = df.reset_index(drop=True)
    train_spk, test_spk = set(out["train"]["speaker"]), set(out["test"]["speaker"])
    leak = (train_spk | set(out["valid"]["speaker"])) & test_spk
    if leak:
        raise ValueError(f"{fold_dir}: speaker(s) {sorted(leak)} in both training/validation and test")
    return out


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Standardise (layers, frames, dim) features with (layers, dim) statistics (std floored at 1e-5)."""
    return (x - mean[:, None]) / std.clamp(min=1e-5)[:, None]


def running_stats(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over frames of (layers, frames, dim) tensors -> (layers, dim) each (float64 sums)."""
    total = s1 = s2 = None
    for x in tensors:
        x = x.double()
        if s1 is None:
            s1, s2, total = x.sum(1), (x * x).sum(1), 0
        else:
            s1 += x.sum(1)
            s2 += (x * x).sum(1)
        total += x.shape[1]
    mean = s1 / total
    var = (s2 / total - mean * mean).clamp(min=0.0)
    return mean.float(), var.sqrt().float()


def speaker_stats(store: EmbeddingStore, manifest: pd.DataFrame, max_utts: int = 200) -> dict[str, tuple]:
    """Per-speaker (mean, std) over up to ``max_utts`` utterances of every speaker (labels are not used)."""
    stats = {}
    for spk, rows in manifest.groupby("speaker"):
        ids = rows["ID"].tolist()[:max_utts]
        stats[str(spk)] = running_stats(store.get(i) for i in ids)
    return stats


def dataset_stats(
    store: EmbeddingStore,
    ids: Sequence[str],
    max_utts: int,
    spk_of: dict[str, str] | None = None,
    spk_stats: dict | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global (layers, dim) mean/std over a random subset of training utterances (after speaker norm)."""
    rng = np.random.default_rng(seed)
    ids = list(ids)
    if len(ids) > max_utts:
        ids = [ids[i] for i in sorted(rng.choice(len(ids), max_utts, replace=False))]

    def feats(uid: str) -> torch.Tensor:
        x = store.get(uid)
        if spk_stats is not None:
            x = normalise(x, *spk_stats[spk_of[uid]])
        return x

    return running_stats(feats(i) for i in ids)


def make_datasets(
    frames: dict[str, pd.DataFrame],
    store: EmbeddingStore,
    label_encoder: CategoricalEncoder,
    max_train_frames: int | None = None,
    spk_stats: dict | None = None,
) -> dict[str, DynamicItemDataset]:
    """DynamicItemDatasets yielding ``feats`` (frames, layers, dim) and ``emotion_encoded``."""
    datasets = {}
    for split, df in frames.items():
        data = {r["ID"]: {k: r[k] for k in ("emotion", "speaker", "duration") if k in r} for r in df.to_dict("records")}
        ds = DynamicItemDataset(data)
        crop = max_train_frames if split == "train" else None

        @sb.utils.data_pipeline.takes("id", "speaker")
        @sb.utils.data_pipeline.provides("feats")
        def feats_pipeline(uid: str, speaker: str, crop: int | None = crop) -> torch.Tensor:
            n = store.frames(uid)
            if crop and n > crop:
                start = int(torch.randint(0, n - crop + 1, (1,)))
                x = store.get(uid, start, start + crop)
            else:
                x = store.get(uid)
            if spk_stats is not None:
                x = normalise(x, *spk_stats[str(speaker)])
            return x.transpose(0, 1).contiguous()

        @sb.utils.data_pipeline.takes("emotion")
        @sb.utils.data_pipeline.provides("emotion_encoded")
        def label_pipeline(emotion: str) -> torch.Tensor:
            return label_encoder.encode_label_torch(str(emotion))

        ds.add_dynamic_item(feats_pipeline)
        ds.add_dynamic_item(label_pipeline)
        ds.set_output_keys(["id", "feats", "emotion_encoded"])
        datasets[split] = ds
    return datasets


def make_label_encoder(labels: Sequence[str], path: str | os.PathLike, train: pd.DataFrame) -> CategoricalEncoder:
    """A CategoricalEncoder with the configured label order, saved to ``label_encoder.txt``.

    Raises if the training data holds a label outside ``labels``.
    """
    unknown = sorted(set(train["emotion"].astype(str)) - set(labels))
    if unknown:
        raise ValueError(f"training labels {unknown} are not in hparams 'labels' {list(labels)}")
    enc = CategoricalEncoder()
    path = Path(path)
    if path.exists():
        enc.load(path)
        if [enc.ind2lab[i] for i in range(len(enc))] != list(labels):
            raise ValueError(f"{path}: label order {list(enc.lab2ind)} differs from hparams labels {list(labels)}")
    else:
        enc.update_from_iterable(labels)
        enc.save(path)
    return enc
