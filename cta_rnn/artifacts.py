"""The files passed between stages: each is written and read only through this module.

| file | written by | read by |
|---|---|---|
| ``data/manifest.csv``, ``data/folds/<protocol>/fold<k>/{train,valid,test}.csv`` | stage 0 | stages 1, 2 |
| ``dump/<encoder>/meta.json`` (the store's identity; shards: :mod:`cta_rnn.store`) | stage 1 | stage 2, cross-corpus |
| ``exp/<name>/folds.json`` (the folds an experiment was asked to train, over all its runs) | stage 2 | stage 3 |
| ``exp/<name>/encoder.json`` (the encoder identity of the store it was trained on) | stage 2 | stage 3 |
| ``exp/<name>/fold<k>/model.json`` (rebuilds the model: :func:`cta_rnn.models.build_model`) | stage 2 | inference |
| ``exp/<name>/fold<k>/label_encoder.txt`` (SpeechBrain ``CategoricalEncoder``) | stage 2 | stage 3, inference |
| ``exp/<name>/fold<k>/predictions.csv`` | stage 2, cross-corpus | stage 3 |
| ``exp/<name>/fold<k>/test_results.json`` | stage 2 | export, inference |
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cta_rnn.io_utils import atomic_to_csv, atomic_write_json

# ---- manifest and fold splits ----
MANIFEST_COLUMNS = ("ID", "wav", "duration", "emotion", "speaker", "session", "gender")
"""Columns every corpus manifest has (corpora may add dialog, condition, text, split, ...)."""
SPLITS = ("train", "valid", "test")


def read_manifest(path: str | os.PathLike, required: Iterable[str] = ("ID", "wav", "duration")) -> pd.DataFrame:
    """Read a manifest CSV, checking required columns and unique IDs; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype={"ID": str, "speaker": str, "session": str}, keep_default_na=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    dup = df["ID"][df["ID"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate IDs {dup[:5]}{' ...' if len(dup) > 5 else ''}")
    return df


def dimension_values(df: pd.DataFrame, name: str, where: str | os.PathLike) -> np.ndarray:
    """Column ``name`` of a manifest as float64, empty / ``NaN`` -> NaN (no rating); a value that is not a
    number or not finite raises a ValueError naming ``where`` and its CSV line."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    raw = df[name].astype(str).str.strip()
    values = pd.to_numeric(raw.replace({"": "nan", "NaN": "nan", "nan": "nan"}), errors="coerce").to_numpy(float)
    bad = np.flatnonzero((np.isnan(values) & ~raw.str.lower().isin(["", "nan"]).to_numpy()) | np.isinf(values))
    if len(bad):
        lines = ", ".join(str(i + 2) for i in bad[:5])
        raise ValueError(f"{where}: {name} must be a number or empty, got {raw.iloc[bad[0]]!r} (line(s) {lines})")
    return values


def read_splits(fold_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """The train/valid/test CSVs of one fold folder."""
    fold_dir = Path(fold_dir)
    return {s: read_manifest(fold_dir / f"{s}.csv", required=("ID", "emotion", "speaker")) for s in SPLITS}


# ---- encoder identity (store meta.json, encoder.json, model.json) ----
ENCODER_SPEC_KEYS = (
    "backend",
    "source",
    "revision",
    "layers",
    "input",
    "dtype",
    "cache_dir",
    "max_chunk_s",
    "interface",
    "frame_pool",
)
"""Keys of an encoder YAML (``recipes/shared/hparams/encoder/*.yaml``)."""
ENCODER_IDENTITY_KEYS = ("name", "backend", "source", "revision", "input", "max_chunk_s", "interface", "frame_pool")
"""What makes two encoders give the same features (layers are checked separately; dtype and cache do not count)."""
STORE_IDENTITY_KEYS = ("encoder", "layers", "dim", "frame_rate", "manifest_checksum", "max_duration")
"""What a store's ``meta.json`` must match for a dump to resume into it."""


def encoder_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """``key: a vs b`` for every identity key on which two encoder descriptions differ."""
    a, b = a or {}, b or {}
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in ENCODER_IDENTITY_KEYS if a.get(k) != b.get(k)]


def encoder_spec(
    identity: dict[str, Any], layers: Sequence[int], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The spec for :func:`cta_rnn.encoders.build_encoder` that recreates a recorded encoder on ``layers``."""
    spec = {k: v for k, v in identity.items() if k in ENCODER_SPEC_KEYS and v is not None}
    spec.update(layers=list(layers), dtype="auto")
    return {**spec, **(overrides or {})}


def encoder_name(identity: dict[str, Any] | None) -> str:
    """Short name of an encoder for tables: ``name`` (the YAML stem), else ``source@revision``, else '—'."""
    if not identity:
        return "—"
    if identity.get("name"):
        return str(identity["name"])
    source = identity.get("source") or identity.get("backend") or "?"
    return f"{source}@{identity['revision']}" if identity.get("revision") else str(source)


def read_store_meta(store_dir: str | os.PathLike) -> dict[str, Any]:
    """A store's ``meta.json``; a missing one says to run stage 1."""
    path = Path(store_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no embedding store there; run stage 1 (the dump) first")
    return json.loads(path.read_text(encoding="utf-8"))


# ---- experiment files ----
def write_folds_list(exp_dir: str | os.PathLike, folds: Sequence[int], available: Sequence[int] | None = None) -> None:
    """``exp/<name>/folds.json``: the folds the experiment trains and those its protocol has (sorted, unique).

    The folds add up over runs (``--folds 1`` then ``--folds 2`` records both): stage 3 expects every fold ever
    asked for, not only the last run's. ``available`` is the protocol's folds now.
    """
    before = read_folds_list(exp_dir) or []
    doc = {"folds": sorted({int(k) for k in [*before, *folds]})}
    if available is not None:
        doc["available"] = sorted({int(k) for k in available})
    atomic_write_json(Path(exp_dir) / "folds.json", doc)


def _read_folds_json(exp_dir: str | os.PathLike) -> dict[str, list[int]] | None:
    path = Path(exp_dir) / "folds.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    lists = [doc.get("folds"), doc.get("available", [])] if isinstance(doc, dict) else [None]
    if not all(isinstance(v, list) and all(isinstance(k, int) for k in v) for v in lists):
        raise ValueError(f"{path}: expected {{'folds': [fold numbers], 'available': [...]}}, got {doc!r}")
    return doc


def read_folds_list(exp_dir: str | os.PathLike) -> list[int] | None:
    """The folds of an experiment, or None when it has no ``folds.json``."""
    doc = _read_folds_json(exp_dir)
    return None if doc is None else doc["folds"]


def read_available_folds(exp_dir: str | os.PathLike) -> list[int] | None:
    """All folds of the experiment's protocol (None when not recorded): more than its folds = a subset."""
    doc = _read_folds_json(exp_dir)
    return None if doc is None else doc.get("available")


def write_encoder_json(exp_dir: str | os.PathLike, store_dir: str | os.PathLike) -> None:
    """``exp/<name>/encoder.json``: the encoder identity (with layers) of the store the experiment uses."""
    meta = read_store_meta(store_dir)
    atomic_write_json(Path(exp_dir) / "encoder.json", {**meta["encoder"], "layers": meta["layers"]})


def read_encoder_json(exp_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The experiment's encoder identity, or None."""
    path = Path(exp_dir) / "encoder.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_model_spec(fold_dir: str | os.PathLike, spec: dict[str, Any]) -> None:
    """``model.json``: model_class, model_kwargs, normalization, labels, layers, num_layers, dim, encoder, ..."""
    atomic_write_json(Path(fold_dir) / "model.json", spec)


def read_model_spec(fold_dir: str | os.PathLike) -> dict[str, Any]:
    """A trained model's ``model.json``."""
    path = Path(fold_dir) / "model.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a trained fold or exported model (no model.json); run stage 2 first")
    return json.loads(path.read_text(encoding="utf-8"))


def write_label_encoder(path: str | os.PathLike, labels: Sequence[str]) -> None:
    """``label_encoder.txt`` in SpeechBrain's CategoricalEncoder format, labels in index order."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    enc = CategoricalEncoder()
    enc.update_from_iterable(list(labels))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    enc.save(tmp)
    os.replace(tmp, path)


def read_label_encoder(path: str | os.PathLike) -> list[str]:
    """Labels in index order from a ``label_encoder.txt`` (read by SpeechBrain's CategoricalEncoder)."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label encoder not found")
    enc = CategoricalEncoder()
    enc.load(path)
    if len(enc) == 0:
        raise ValueError(f"{path}: no labels")
    return [str(enc.ind2lab[i]) for i in range(len(enc))]


def ensure_label_encoder(path: str | os.PathLike, labels: Sequence[str], train_labels: Iterable[str]) -> list[str]:
    """Write (or check) a fold's label encoder; training labels outside ``labels`` are an error."""
    unknown = sorted(set(map(str, train_labels)) - set(labels))
    if unknown:
        raise ValueError(f"training labels {unknown} are not in hparams 'labels' {list(labels)}")
    if Path(path).is_file():
        have = read_label_encoder(path)
        if have != list(labels):
            raise ValueError(f"{path}: label order {have} differs from hparams labels {list(labels)}")
    else:
        write_label_encoder(path, labels)
    return list(labels)


PREDICTIONS = "predictions.csv"


def predictions_frame(
    ids,
    true,
    probs: np.ndarray,
    chan: np.ndarray,
    labels,
    layers,
    dimensions: Sequence[str] = (),
    true_dims: np.ndarray | None = None,
    pred_dims: np.ndarray | None = None,
) -> pd.DataFrame:
    """The predictions.csv contract: ID, true, predicted, prob_<label>..., att_layer<j>... (true = label names);
    a model with dimensions adds true_<dim> (empty: no rating) and pred_<dim> (the corpus's scale) per dimension.
    A dimensional-only model (``probs`` with no column) leaves ``predicted`` empty and has no prob_ columns."""
    predicted = [labels[i] for i in probs.argmax(1)] if probs.shape[1] else [""] * len(ids)
    df = pd.DataFrame({"ID": list(ids), "true": list(true), "predicted": predicted})
    for j, lab in enumerate(labels[: probs.shape[1]]):
        df[f"prob_{lab}"] = probs[:, j].round(6)
    for j, layer in enumerate(layers):
        df[f"att_layer{layer}"] = chan[:, j].round(6)
    for k, name in enumerate(dimensions):
        df[f"true_{name}"] = true_dims[:, k]
        df[f"pred_{name}"] = pred_dims[:, k].round(4)
    return df


def prediction_dimensions(df: pd.DataFrame) -> list[str]:
    """The dimensions a predictions.csv holds (columns ``pred_<dim>``), in column order."""
    return [c[5:] for c in df.columns if c.startswith("pred_")]


def dimension_arrays(df: pd.DataFrame, names: Sequence[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, pred) arrays (N, K) of a predictions.csv's dimensions (NaN: no rating)."""
    true = np.stack([dimension_values(df, f"true_{n}", where) for n in names], 1)
    pred = np.stack([dimension_values(df, f"pred_{n}", where) for n in names], 1)
    return true, pred


def write_predictions(fold_dir: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Atomically write a fold's predictions.csv."""
    path = Path(fold_dir) / PREDICTIONS
    atomic_to_csv(frame, path)
    return path


def read_predictions(fold_dir: str | os.PathLike) -> pd.DataFrame:
    """A fold's predictions.csv, checked for the contract's columns and unique IDs."""
    path = Path(fold_dir) / PREDICTIONS
    df = pd.read_csv(path, dtype={"ID": str, "true": str, "predicted": str}, keep_default_na=False)
    missing = [c for c in ("ID", "true", "predicted") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{path}: no predictions")
    dup = df["ID"][df["ID"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate IDs {dup[:5]}")
    return df


def write_test_results(fold_dir: str | os.PathLike, result: dict[str, Any]) -> None:
    """``test_results.json``: test scores, best epoch, validation UA, epochs run, split sizes; marks a finished fold."""
    atomic_write_json(Path(fold_dir) / "test_results.json", result)


def read_test_results(fold_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A fold's test results, or None when the fold did not finish."""
    path = Path(fold_dir) / "test_results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_results(exp_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """``exp/<name>/results.json``: stage 3's scores of an experiment (per fold, mean ± std, pooled, confusion)."""
    path = Path(exp_dir) / "results.json"
    atomic_write_json(path, result)
    return path


def read_results(exp_dir: str | os.PathLike) -> dict[str, Any] | None:
    """An experiment's ``results.json``, or None when it has not been scored."""
    path = Path(exp_dir) / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def available_folds(protocol_dir: str | os.PathLike) -> list[int]:
    """Fold numbers prepared under ``data/folds/<protocol>`` (folders ``fold<k>``)."""
    protocol_dir = Path(protocol_dir)
    if not protocol_dir.is_dir():
        raise FileNotFoundError(f"{protocol_dir}: no such protocol prepared; run stage 0 with this --protocol")
    return sorted(int(p.name[4:]) for p in protocol_dir.glob("fold*") if p.is_dir() and p.name[4:].isdigit())


def select_folds(selection: str, available: Sequence[int]) -> list[int]:
    """``"1,3"``, ``"2-5"``, ``"1-3,7"`` or empty (all) -> sorted unique fold numbers, each one available.

    A range that runs backwards (``3-1``) or a selection of no fold is refused in one line, as is a protocol
    with no fold prepared.
    """
    if not available:
        raise ValueError("no fold prepared for this protocol (no fold<k> folders); run stage 0 with this --protocol")
    if not selection.strip():
        return list(available)
    chosen: set[int] = set()
    for part in selection.replace(" ", ",").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"--folds {selection!r}: {part!r} is not a fold number or a range a-b")
        if sep and int(lo) > int(hi):
            raise ValueError(f"--folds {selection!r}: range {part} has start > end (write {hi}-{lo})")
        chosen.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    if not chosen:
        raise ValueError(f"--folds {selection!r}: selects no fold (e.g. 1,3 or 1-2)")
    absent = sorted(chosen - set(available))
    if absent:
        raise ValueError(f"--folds {selection!r}: fold(s) {absent} do not exist (prepared: {list(available)})")
    return sorted(chosen)
