"""SER metrics: WA (accuracy), UA (macro recall), macro-F1, confusion matrix, fold aggregation.

Definitions (all values are fractions in [0, 1]; tables multiply by 100):

- WA, weighted accuracy = accuracy = weighted recall: correct / total.
- UA, unweighted accuracy = the mean per-class recall over the label set, where classes that
  never occur in ``y_true`` are excluded (their recall is undefined, 0/0). A class that is only
  predicted, never true, therefore does not enter UA (its false positives still lower the recall
  of the true classes). Equals ``sklearn.metrics.recall_score(average="macro", labels=present)``.
- macro-F1 = the mean per-class F1 over the labels that occur in ``y_true`` or ``y_pred``
  (a class absent from both is excluded; one that is predicted but never true scores F1 = 0).
- Fold aggregation: mean and *sample* standard deviation (ddof=1) over folds; with one fold the
  std is undefined and reported as None.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

SCORE_KEYS = ("wa", "ua", "macro_f1")
"""Per-fold scalar scores that ``aggregate_folds`` summarises."""


def _to_list(x: Any) -> list:
    """Flatten a tensor, array or sequence of labels into a plain Python list."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        return [int(v) for v in arr.reshape(-1)]
    return [v.item() if isinstance(v, np.generic) else v for v in arr.reshape(-1)]


def _check(y_true: Sequence, y_pred: Sequence) -> tuple[list, list]:
    """Return both label sequences as lists, checking they are non-empty and aligned."""
    yt, yp = _to_list(y_true), _to_list(y_pred)
    if len(yt) != len(yp):
        raise ValueError(f"y_true has {len(yt)} items, y_pred has {len(yp)}")
    if not yt:
        raise ValueError("no predictions to score")
    return yt, yp


def _present(y_true: Sequence, labels: Sequence | None) -> list:
    """Labels (in ``labels`` order, else sorted) that occur in ``y_true``."""
    seen = set(y_true)
    if labels is None:
        return sorted(seen)
    return [lab for lab in labels if lab in seen]


def weighted_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """WA: the fraction of correct predictions (accuracy, recall weighted by class support)."""
    yt, yp = _check(y_true, y_pred)
    return float(np.mean(np.asarray(yt, dtype=object) == np.asarray(yp, dtype=object)))


def unweighted_accuracy(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """UA: mean recall over the classes of ``labels`` that occur in ``y_true`` (all of them if None)."""
    yt, yp = _check(y_true, y_pred)
    present = _present(yt, labels)
    if not present:
        raise ValueError(f"none of the labels {list(labels or [])} occurs in y_true")
    return float(recall_score(yt, yp, labels=present, average="macro", zero_division=0))


def per_class_recall(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> dict[Any, float | None]:
    """Recall of every label; None for a label that never occurs in ``y_true``."""
    yt, yp = _check(y_true, y_pred)
    present = set(yt)
    rec = recall_score(yt, yp, labels=list(labels), average=None, zero_division=0)
    return {lab: (float(r) if lab in present else None) for lab, r in zip(labels, rec)}


def macro_f1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Macro-F1 over the labels (of ``labels`` if given) that occur in ``y_true`` or ``y_pred``."""
    yt, yp = _check(y_true, y_pred)
    seen = set(yt) | set(yp)
    used = sorted(seen) if labels is None else [lab for lab in labels if lab in seen]
    if not used:
        raise ValueError(f"none of the labels {list(labels or [])} occurs in y_true or y_pred")
    return float(f1_score(yt, yp, labels=used, average="macro", zero_division=0))


def confusion(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class, in ``labels`` order."""
    yt, yp = _check(y_true, y_pred)
    unknown = sorted({str(v) for v in yt + yp if v not in set(labels)})
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label set {list(labels)}")
    return confusion_matrix(yt, yp, labels=list(labels)).astype(np.int64)


def classification_scores(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> dict[str, Any]:
    """All scores of one evaluation set as a JSON-ready dict.

    Keys: ``n``, ``wa``, ``ua``, ``macro_f1``, ``recall`` (label -> recall or None),
    ``support`` (label -> count in y_true), ``labels``, ``confusion`` (list of rows).
    """
    labels = list(labels)
    cm = confusion(y_true, y_pred, labels)
    return {
        "n": int(cm.sum()),
        "wa": weighted_accuracy(y_true, y_pred),
        "ua": unweighted_accuracy(y_true, y_pred, labels),
        "macro_f1": macro_f1(y_true, y_pred, labels),
        "recall": {str(k): v for k, v in per_class_recall(y_true, y_pred, labels).items()},
        "support": {str(lab): int(s) for lab, s in zip(labels, cm.sum(axis=1))},
        "labels": [str(lab) for lab in labels],
        "confusion": cm.tolist(),
    }


def mean_std(values: Iterable[float], ddof: int = 1) -> dict[str, float | int | None]:
    """Mean and standard deviation (sample std, ``ddof=1``, by default); std None if undefined."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise ValueError("no values to aggregate")
    std = float(np.std(arr, ddof=ddof)) if arr.size > ddof else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def aggregate_folds(per_fold: Sequence[dict[str, Any]], keys: Sequence[str] = SCORE_KEYS, ddof: int = 1) -> dict:
    """Mean and std over folds of each score in ``keys``; sums the confusion matrices if all folds have one.

    Returns ``{key: {"mean", "std", "n"}, ..., "confusion": summed rows (if any), "ddof": ddof}``.
    """
    if not per_fold:
        raise ValueError("no folds to aggregate")
    out: dict[str, Any] = {k: mean_std([f[k] for f in per_fold], ddof=ddof) for k in keys}
    if all("confusion" in f for f in per_fold):
        mats = [np.asarray(f["confusion"], dtype=np.int64) for f in per_fold]
        if len({m.shape for m in mats}) != 1:
            raise ValueError(f"confusion matrices differ in shape: {[m.shape for m in mats]}")
        out["confusion"] = np.sum(mats, axis=0).tolist()
    out["ddof"] = ddof
    return out
