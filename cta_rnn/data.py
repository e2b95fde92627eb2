"""A fold's data for stage 2: its splits checked against the store, normalisation statistics, batch loaders."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cta_rnn.artifacts import SPLITS, dimension_values, read_splits
from cta_rnn.feature_cache import FeatureSource, SplitData, plan_epoch, plan_eval
from cta_rnn.io_utils import epoch_seed
from cta_rnn.normalization import FeatureNormalizer, running_stats
from cta_rnn.store import EmbeddingStore, skipped_ids


def read_fold(fold_dir: str | os.PathLike, store: EmbeddingStore) -> dict[str, pd.DataFrame]:
    """Train/valid/test of a fold, dropping (with a check) utterances the dump skipped; refuses speaker leaks."""
    fold_dir = Path(fold_dir)
    splits = read_splits(fold_dir)
    skipped = set(skipped_ids(store.root))
    for split, df in splits.items():
        missing = ~df["ID"].isin(store.index.keys())
        if missing.all():
            raise ValueError(f"{fold_dir / f'{split}.csv'}: none of its utterances are in the store {store.root}")
        unexplained = sorted(set(df["ID"][missing]) - skipped)
        if unexplained:
            raise ValueError(
                f"{fold_dir / f'{split}.csv'}: {len(unexplained)} utterances not in the store "
                f"{store.root}, e.g. {unexplained[:3]} (was it dumped from this manifest?)"
            )
        splits[split] = df[~missing].reset_index(drop=True)
    seen = set(splits["train"]["speaker"]) | set(splits["valid"]["speaker"])
    leak = seen & set(splits["test"]["speaker"])
    if leak:
        raise ValueError(f"{fold_dir}: speaker(s) {sorted(leak)} in both training/validation and test")
    return splits


FOLD_DATA_COLUMNS = ("ID", "emotion", "speaker")
"""The columns of a fold CSV that training reads (features come from the store by ID; ``wav`` is not read)."""


def column_digest(values: Sequence[object]) -> str:
    """16 hex digits of a SHA-256 of a column's values in row order."""
    h = hashlib.sha256()
    for v in values:
        h.update(f"{v}\n".encode())
    return h.hexdigest()[:16]


def fold_data_digest(fold_dir: str | os.PathLike, dimensions: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """What a fold's data is, for its run identity: per ``<split>.csv`` the row count and a digest of each of
    :data:`FOLD_DATA_COLUMNS` and of the ``dimensions`` a dimensional run regresses (read values, so formatting
    and column order do not count, locations neither)."""
    splits = read_splits(fold_dir)
    digest = {}
    for split in SPLITS:
        df = splits[split]
        where = Path(fold_dir) / f"{split}.csv"
        digest[f"{split}.csv"] = {
            "rows": len(df),
            **{c: column_digest(df[c].astype(str)) for c in FOLD_DATA_COLUMNS},
            **{d: column_digest(dimension_values(df, d, where)) for d in dimensions},
        }
    return digest


def stats_per_speaker(
    source: FeatureSource, utterances: pd.DataFrame, max_utts: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-speaker (mean, std) over up to ``max_utts`` utterances of every speaker (labels are not used)."""
    return {
        str(spk): running_stats(source.utterance(u) for u in rows["ID"].tolist()[:max_utts])
        for spk, rows in utterances.groupby("speaker")
    }


def fit_normalizer(
    normalizer: FeatureNormalizer,
    source: FeatureSource,
    splits: dict[str, pd.DataFrame],
    max_utts: int,
    seed: int,
) -> None:
    """Fit speaker statistics (every speaker of the fold, no labels) and global statistics (training set)."""
    if normalizer.mode == "none":
        return
    train = splits["train"]
    if normalizer.mode == "speaker":
        every = pd.concat(list(splits.values())).drop_duplicates("ID")
        normalizer.set_speakers(stats_per_speaker(source, every, max(1, max_utts // 10)))
        normalizer.set_fallback(train["speaker"].astype(str))
    ids = train["ID"].tolist()
    if len(ids) > max_utts:
        rng = np.random.default_rng(seed)
        ids = [ids[i] for i in sorted(rng.choice(len(ids), max_utts, replace=False))]
    spk_of = dict(zip(train["ID"], train["speaker"].astype(str)))

    def speaker_normalised(uid: str) -> torch.Tensor:
        x = source.utterance(uid).float().to(normalizer.mean.device)
        if normalizer.mode == "speaker":
            idx = normalizer.speaker_index([spk_of[uid]], 1)
            mean, std = normalizer.batch_stats(1, idx)
            x = (x - mean) / std
        return x

    normalizer.set_global(*running_stats(speaker_normalised(u) for u in ids))


def dimension_targets(df: pd.DataFrame, dimensions: Sequence[str], where: str | os.PathLike) -> np.ndarray:
    """(N, K) float ratings of ``dimensions`` (NaN: no rating); a dimension the CSV lacks is an error naming it."""
    absent = [d for d in dimensions if d not in df.columns]
    if absent:
        raise ValueError(
            f"{where}: no column(s) {absent} for the dimensional task (rerun stage 0 to add them, or set 'dimensions')"
        )
    return np.stack([dimension_values(df, d, where) for d in dimensions], 1) if dimensions else np.zeros((len(df), 0))


def split_data(
    df: pd.DataFrame,
    labels: Sequence[str],
    normalizer: FeatureNormalizer,
    dimensions: Sequence[str] = (),
    where: str | os.PathLike = "split",
) -> SplitData:
    """IDs, label indices, normaliser speaker rows and dimension ratings (N, K) of one split."""
    index = {lab: i for i, lab in enumerate(labels)}
    return SplitData(
        ids=df["ID"].tolist(),
        labels=[index[str(e)] for e in df["emotion"]],
        speakers=normalizer.speaker_index(df["speaker"].astype(str), len(df)).tolist(),
        targets=dimension_targets(df, dimensions, where),
    )


def make_loaders(
    source: FeatureSource,
    splits: dict[str, pd.DataFrame],
    labels: Sequence[str],
    normalizer: FeatureNormalizer,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    sorting: str = "random",
    crop: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    dimensions: Sequence[str] = (),
) -> dict[str, DataLoader]:
    """Loaders of planned batches: training (shuffled or sorted or balanced, cropped) and evaluation (whole);
    batches carry the ratings of ``dimensions`` (a dimensional task)."""
    train = split_data(splits["train"], labels, normalizer, dimensions, "train.csv")
    train_frames = source.frames(train.ids)
    weights = None
    if sorting == "balanced":
        counts = pd.Series(train.labels).value_counts()
        weights = [1.0 / counts[y] for y in train.labels]

    def plan_train(epoch: int) -> list:
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        return plan_epoch(train_frames, batch_size, gen, sorting, crop, weights, rank, world_size)

    loaders = {"train": source.loader(train, plan_train)}
    for s in ("valid", "test"):
        loaders[s] = eval_loader(source, splits[s], labels, normalizer, eval_batch_size, dimensions, f"{s}.csv")
    return loaders


def eval_loader(
    source: FeatureSource,
    df: pd.DataFrame,
    labels: Sequence[str],
    normalizer: FeatureNormalizer,
    batch_size: int,
    dimensions: Sequence[str] = (),
    where: str | os.PathLike = "split",
) -> DataLoader:
    """Whole utterances of ``df`` in their listed order (validation, test, cross-corpus test)."""
    data = split_data(df, labels, normalizer, dimensions, where)
    frames = source.frames(data.ids)
    return source.loader(data, lambda epoch: plan_eval(frames, batch_size))
