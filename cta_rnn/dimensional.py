"""Dimensional emotion (arousal, valence, dominance): the concordance correlation coefficient as metric and
loss, Pearson r and RMSE, with missing ratings (NaN) left out of each dimension.

CCC (Lin, 1989) = 2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2), population (1/N) moments: 1 for a
perfect prediction, 0 for a constant one, -1 for a mirrored one. The loss is 1 - CCC per dimension over the
rated utterances of the batch, averaged over the dimensions that have at least two ratings in it (the usual
choice of the field, e.g. Trigeorgis et al. 2016; Atmaja & Akagi 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

TASKS = ("categorical", "dimensional", "both")


def ccc(y: np.ndarray, p: np.ndarray) -> float:
    """CCC of two 1-D arrays (NaN in ``y`` left out); NaN with fewer than 2 rated values."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if len(y) < 2:
        return float("nan")
    my, mp = y.mean(), p.mean()
    denom = y.var() + p.var() + (my - mp) ** 2
    if denom == 0:
        return 1.0 if np.array_equal(y, p) else 0.0
    return float(2 * ((y - my) * (p - mp)).mean() / denom)


def pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Pearson r (NaN in ``y`` left out); NaN when either side is constant or fewer than 2 values."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    keep = ~np.isnan(y)
    if keep.sum() < 2:
        return float("nan")
    y, p = y[keep] - y[keep].mean(), p[keep] - p[keep].mean()
    denom = np.sqrt((y**2).sum() * (p**2).sum())
    return float((y * p).sum() / denom) if denom > 0 else float("nan")


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error over the rated values (NaN with none)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    keep = ~np.isnan(y)
    return float(np.sqrt(((y[keep] - p[keep]) ** 2).mean())) if keep.any() else float("nan")


def dimension_scores(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per dimension: CCC, Pearson r, RMSE and the number of rated utterances ``n``; ``true`` and ``pred`` are
    (N, K) with NaN where an utterance has no rating."""
    true, pred = np.asarray(true, float).reshape(-1, len(names)), np.asarray(pred, float).reshape(-1, len(names))
    return {
        name: {
            "CCC": ccc(true[:, k], pred[:, k]),
            "r": pearson(true[:, k], pred[:, k]),
            "RMSE": rmse(true[:, k], pred[:, k]),
            "n": int((~np.isnan(true[:, k])).sum()),
        }
        for k, name in enumerate(names)
    }


def mean_ccc(scores: dict[str, dict[str, float]]) -> float:
    """Mean CCC over the dimensions that have one (NaN if none)."""
    values = [s["CCC"] for s in scores.values() if not np.isnan(s["CCC"])]
    return float(np.mean(values)) if values else float("nan")


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of 1 - CCC of ``pred`` and ``target`` (B, K), NaN targets masked; dimensions with
    fewer than 2 ratings in the batch are left out (a zero loss that keeps the graph when none has)."""
    rated = ~torch.isnan(target)
    losses = []
    for k in range(target.shape[1]):
        keep = rated[:, k]
        if int(keep.sum()) < 2:
            continue
        y, p = target[keep, k], pred[keep, k]
        my, mp = y.mean(), p.mean()
        cov = ((y - my) * (p - mp)).mean()
        denom = y.var(unbiased=False) + p.var(unbiased=False) + (my - mp) ** 2
        losses.append(1 - 2 * cov / denom.clamp(min=1e-8))
    return torch.stack(losses).mean() if losses else pred.sum() * 0.0


def mse_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the rated entries of (B, K); with ``scale`` (K,) the errors are divided by it
    first (standardised units: the training standard deviation of each dimension)."""
    rated = ~torch.isnan(target)
    if not bool(rated.any()):
        return pred.sum() * 0.0
    err = pred - torch.nan_to_num(target)
    if scale is not None:
        err = err / scale
    return (err[rated] ** 2).mean()


def training_stats(values: np.ndarray, names: Sequence[str], where: str = "training set") -> dict[str, list[float]]:
    """``name -> [mean, std]`` of each dimension over its rated training utterances (population std; 1 when
    constant); a dimension with no rating at all is an error naming it."""
    values = np.asarray(values, float).reshape(-1, len(names))
    out = {}
    for k, name in enumerate(names):
        col = values[:, k][~np.isnan(values[:, k])]
        if len(col) == 0:
            raise ValueError(f"{where}: no utterance has a {name} rating; drop it from 'dimensions' or add the column")
        std = float(col.std())
        out[name] = [float(col.mean()), std if std > 0 else 1.0]
    return out
