"""PNG plots for scoring and inspection: confusion, channel attention, layer sweep, temporal attention,
predicted vs true dimensions.

Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas (no pyplot state, no display needed)
and written atomically: saved to a temp file in the target folder, then renamed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .io_utils import atomic_to_csv

PNG_METADATA = {"Software": None}
"""Drop the matplotlib version from the PNG so identical inputs give identical bytes."""


def new_figure(**kwargs) -> Figure:
    """A Figure on an Agg canvas (never touches pyplot or the user's interactive backend)."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (temp file + rename) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=PNG_METADATA)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; plots are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _heatmap(ax, mat: np.ndarray, labels: Sequence[str], fmt: str, title: str, vmax: float | None) -> None:
    """Draw one annotated matrix on ``ax`` (rows true, columns predicted)."""
    im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
    n = len(labels)
    ax.set_xticks(range(n), labels=labels)
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = vmax if vmax is not None else (mat.max() if mat.size else 1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                format(mat[i, j], fmt),
                ha="center",
                va="center",
                color="white" if mat[i, j] > 0.5 * top else "black",
                fontsize=9,
            )
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def confusion_figure(
    cm: np.ndarray | Sequence[Sequence[int]], labels: Sequence[str], title: str | None = None
) -> Figure:
    """Confusion matrix as counts (left) and row-normalised recall in % (right)."""
    cm = np.asarray(cm, dtype=float)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {len(labels)} labels")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = new_figure(figsize=(10, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    _heatmap(ax1, cm.astype(np.int64), labels, "d", "counts", None)
    _heatmap(ax2, norm, labels, ".1f", "row-normalised (recall, %)", 100.0)
    if title:
        fig.suptitle(title)
    return fig


def plot_confusion(
    cm: np.ndarray | Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> Path:
    """The confusion figure (:func:`confusion_figure`) saved as PNG at ``path``."""
    return save_figure(confusion_figure(cm, labels, title), path)


def channel_attention_figure(
    att: np.ndarray,
    labels_per_utt: Sequence[str],
    label_order: Sequence[str] | None = None,
    layer_ids: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """Mean channel attention weight per encoder layer, one line (with ±1 std band) per emotion.

    Args:
        att: (N, L) channel attention weights of N utterances over L encoder layers.
        labels_per_utt: the emotion of each utterance (usually the true label).
        label_order: the classes to draw, in legend order (default: sorted classes present).
        layer_ids: x-axis tick values (encoder layer indices), default 0..L-1.
    """
    att = np.asarray(att, dtype=float)
    if att.ndim != 2 or att.shape[0] != len(labels_per_utt):
        raise ValueError(f"att must be (N, L) with N = {len(labels_per_utt)} labels, got {att.shape}")
    lab = np.asarray([str(x) for x in labels_per_utt])
    order = [str(x) for x in label_order] if label_order is not None else sorted(set(lab))
    x = np.asarray(layer_ids if layer_ids is not None else range(att.shape[1]))
    fig = new_figure(figsize=(8, 4))
    ax = fig.subplots()
    for name in order:
        sel = att[lab == name]
        if not len(sel):
            continue
        mean, std = sel.mean(axis=0), sel.std(axis=0)
        (line,) = ax.plot(x, mean, marker="o", label=f"{name} (n={len(sel)})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.plot(x, att.mean(axis=0), color="black", linestyle="--", linewidth=1, label="all")
    ax.set_xticks(x)
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("mean channel attention weight")
    ax.set_title(title or "Channel attention over encoder layers per emotion")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def plot_channel_attention(
    att: np.ndarray,
    labels_per_utt: Sequence[str],
    path: str | os.PathLike,
    label_order: Sequence[str] | None = None,
    layer_ids: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """The channel attention figure (:func:`channel_attention_figure`) saved as PNG at ``path``."""
    return save_figure(channel_attention_figure(att, labels_per_utt, label_order, layer_ids, title), path)


def layer_sweep_figure(
    layers: Sequence[int],
    ua: Sequence[float],
    ua_std: Sequence[float | None] | None = None,
    title: str | None = None,
) -> Figure:
    """UA (%) of single-layer models against the encoder layer index, with std error bars if given.

    ``ua`` values are fractions in [0, 1] (as in results.json); the axis shows percentages.
    """
    if len(layers) != len(ua):
        raise ValueError(f"{len(layers)} layers but {len(ua)} UA values")
    order = np.argsort(np.asarray(layers))
    x = np.asarray(layers)[order]
    y = 100 * np.asarray(ua, dtype=float)[order]
    err = None
    if ua_std is not None:
        err = 100 * np.asarray([np.nan if s is None else s for s in ua_std], dtype=float)[order]
    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
    best = int(np.nanargmax(y))
    ax.plot(
        [x[best]],
        [y[best]],
        marker="*",
        markersize=14,
        color="tab:red",
        linestyle="none",
        label=f"best: layer {x[best]} ({y[best]:.2f}%)",
    )
    ax.legend(loc="best", fontsize=8)
    ax.set_xticks(x)
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("UA (%)")
    ax.set_title(title or "Single-layer sweep: UA vs encoder layer")
    ax.grid(alpha=0.3)
    return fig


def plot_layer_sweep(
    layers: Sequence[int],
    ua: Sequence[float],
    path: str | os.PathLike,
    ua_std: Sequence[float | None] | None = None,
    title: str | None = None,
) -> Path:
    """The layer sweep figure (:func:`layer_sweep_figure`) saved as PNG at ``path``."""
    return save_figure(layer_sweep_figure(layers, ua, ua_std, title), path)


def scatter_points(
    true: np.ndarray,
    pred: np.ndarray,
    names: Sequence[str],
    folds: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Long table of the points of :func:`plot_dimension_scatter`: dimension, fold, ID, true, pred per rated
    utterance (NaN true or pred: no point), dimensions in ``names`` order, utterances in input order."""
    true = np.asarray(true, dtype=float).reshape(-1, len(names))
    pred = np.asarray(pred, dtype=float).reshape(-1, len(names))
    if true.shape != pred.shape:
        raise ValueError(f"true {true.shape} and pred {pred.shape} differ in shape")
    n = len(true)
    folds = list(folds) if folds is not None else [""] * n
    ids = list(ids) if ids is not None else [str(i) for i in range(n)]
    if len(folds) != n or len(ids) != n:
        raise ValueError(f"{n} utterances but {len(folds)} folds and {len(ids)} IDs")
    frames = []
    for k, name in enumerate(names):
        keep = ~(np.isnan(true[:, k]) | np.isnan(pred[:, k]))
        frames.append(
            pd.DataFrame(
                {
                    "dimension": name,
                    "fold": np.asarray(folds, dtype=object)[keep],
                    "ID": np.asarray(ids, dtype=object)[keep],
                    "true": true[keep, k],
                    "pred": pred[keep, k],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def plot_dimension_scatter(
    true: np.ndarray,
    pred: np.ndarray,
    names: Sequence[str],
    path: str | os.PathLike,
    folds: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    title: str | None = None,
) -> tuple[Path, pd.DataFrame]:
    """Predicted against true rating, one panel per dimension, with the diagonal and the CCC in each title.

    ``true`` and ``pred`` are (N, K) (NaN true: no rating, no point); ``folds`` colours the points by fold.
    The points drawn are also written to ``<path stem>.csv`` (see :func:`scatter_points`) and returned.
    """
    from .dimensional import ccc  # imports torch: only when a scatter is drawn

    points = scatter_points(true, pred, names, folds, ids)
    fig = new_figure(figsize=(4.2 * len(names), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    fold_order = list(dict.fromkeys(points["fold"]))
    for ax, name in zip(axes, names):
        sel = points[points["dimension"] == name]
        for j, fold in enumerate(fold_order):
            f = sel[sel["fold"] == fold]
            label = f"fold {fold}" if fold != "" else None
            ax.scatter(f["true"], f["pred"], s=10, alpha=0.6, color=f"C{j % 10}", label=label, linewidths=0)
        values = np.concatenate([sel["true"], sel["pred"]])
        lo, hi = (values.min(), values.max()) if values.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) or 0.5
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linestyle="--", linewidth=1)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        c = ccc(sel["true"].to_numpy(), sel["pred"].to_numpy())
        ax.set_title(f"{name}: CCC {c:.3f} (n={len(sel)})")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.grid(alpha=0.3)
    if 1 < len(fold_order) <= 10:
        axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        fig.suptitle(title)
    atomic_to_csv(points, Path(path).with_suffix(".csv"))
    return save_figure(fig, path), points


def temporal_attention_figure(
    wav: np.ndarray, sample_rate: int, att: np.ndarray, frame_rate: float, title: str | None = None
) -> Figure:
    """Temporal attention weights of one utterance drawn over its waveform (top) and spectrogram (bottom).

    ``att`` holds one weight per encoder frame at ``frame_rate`` frames per second (frame k is drawn
    at its centre, (k + 0.5) / frame_rate seconds).
    """
    wav = np.asarray(wav, dtype=float).reshape(-1)
    att = np.asarray(att, dtype=float).reshape(-1)
    if wav.size == 0 or att.size == 0:
        raise ValueError("empty waveform or attention")
    t_wav = np.arange(wav.size) / sample_rate
    t_att = (np.arange(att.size) + 0.5) / frame_rate
    fig = new_figure(figsize=(10, 5.5))
    ax_w, ax_s = fig.subplots(2, 1, sharex=True)
    ax_w.plot(t_wav, wav, color="0.6", linewidth=0.5)
    ax_w.set_ylabel("amplitude")
    ax_w.set_title(title or "Temporal attention")
    nfft = int(min(512, 2 ** np.floor(np.log2(max(wav.size, 16)))))
    dither = 1e-6 * np.random.default_rng(0).standard_normal(wav.size)  # digital silence would be -inf dB
    ax_s.specgram(wav + dither, NFFT=nfft, Fs=sample_rate, noverlap=nfft * 3 // 4, cmap="magma", scale="dB")
    ax_s.set_ylabel("frequency (Hz)")
    ax_s.set_xlabel("time (s)")
    for ax, color in ((ax_w, "tab:red"), (ax_s, "cyan")):
        twin = ax.twinx()
        twin.plot(t_att, att, color=color, linewidth=1.5)
        twin.fill_between(t_att, 0, att, color=color, alpha=0.2)
        twin.set_ylim(0, 1.05 * float(att.max()) if att.max() > 0 else 1)
        twin.set_ylabel("attention weight", color=color)
    ax_w.set_xlim(0, max(t_wav[-1], t_att[-1]))
    return fig


def plot_temporal_attention(
    wav: np.ndarray,
    sample_rate: int,
    att: np.ndarray,
    frame_rate: float,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """The temporal attention figure (:func:`temporal_attention_figure`) saved as PNG at ``path``."""
    return save_figure(temporal_attention_figure(wav, sample_rate, att, frame_rate, title), path)


def timeline_figure(
    envelope: tuple[np.ndarray, np.ndarray, np.ndarray],
    speech: Sequence[tuple[float, float]],
    segments: Sequence[dict],
    labels: Sequence[str],
    cells: np.ndarray,
    cell_probs: np.ndarray,
    title: str | None = None,
) -> Figure:
    """Emotion over time: waveform with speech regions (top), a label band per speaker (middle), class
    probabilities per hop cell (bottom), on one time axis.

    Args:
        envelope: (times s, min, max) of the waveform per bucket (a decimated waveform).
        speech: (start, end) seconds of the speech regions.
        segments: rows with start, end, speaker ('' when unknown) and label.
        cells: (K, 2) start and end seconds of the hop cells; ``cell_probs`` (K, C) their class probabilities.
    The band axis has ``gid`` "bands", one y tick per speaker and one rectangle per segment.
    """
    times, lo, hi = (np.asarray(a, dtype=float) for a in envelope)
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    speakers = sorted({str(s["speaker"]) for s in segments}) or [""]
    fig = new_figure(figsize=(12, 6.5))
    ax_w, ax_b, ax_p = fig.subplots(3, 1, sharex=True, height_ratios=[2, max(1, 0.5 * len(speakers)), 2])
    ax_w.fill_between(times, lo, hi, color="0.45", linewidth=0, step="mid")
    for a, b in speech:
        ax_w.axvspan(a, b, color="tab:green", alpha=0.15, linewidth=0)
    ax_w.set_ylabel("amplitude")
    ax_w.set_title(title or "Emotion over time")
    ax_b.set_gid("bands")
    for row, spk in enumerate(speakers):
        for lab in labels:
            spans = [(s["start"], s["end"] - s["start"]) for s in segments if s["speaker"] == spk and s["label"] == lab]
            if spans:
                ax_b.broken_barh(spans, (row - 0.4, 0.8), facecolors=colors[lab])
    ax_b.set_yticks(range(len(speakers)), labels=[s or "speech" for s in speakers])
    ax_b.set_ylim(-0.6, len(speakers) - 0.4)
    handles = [Patch(color=colors[lab], label=lab) for lab in labels]
    ax_b.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    cells = np.asarray(cells, dtype=float).reshape(-1, 2)
    probs = np.asarray(cell_probs, dtype=float).reshape(len(cells), len(labels))
    if len(cells):  # a step per cell, broken between cells that do not touch (pauses, other speakers)
        gap = 2 * (np.flatnonzero(cells[1:, 0] > cells[:-1, 1] + 1e-6) + 1)
        x = np.insert(cells.reshape(-1), gap, np.nan)
        for k, lab in enumerate(labels):
            y = np.insert(np.repeat(probs[:, k], 2), gap, np.nan)
            ax_p.plot(x, y, color=colors[lab], label=lab, linewidth=1.2)
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel("probability")
    ax_p.set_xlabel("time (s)")
    ax_p.grid(alpha=0.3)
    end = max([float(times[-1]) if times.size else 0.0] + [s["end"] for s in segments] + [b for _, b in speech])
    ax_p.set_xlim(0, end or 1.0)
    return fig


def plot_timeline(
    envelope: tuple[np.ndarray, np.ndarray, np.ndarray],
    speech: Sequence[tuple[float, float]],
    segments: Sequence[dict],
    labels: Sequence[str],
    cells: np.ndarray,
    cell_probs: np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """:func:`timeline_figure` saved as a PNG (atomically)."""
    return save_figure(timeline_figure(envelope, speech, segments, labels, cells, cell_probs, title), path)
