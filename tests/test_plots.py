"""Every plot shows its data (checked on the figure's artists) and is written atomically as a valid PNG; identical
inputs give identical bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cta_rnn.plots import (
    channel_attention_figure,
    confusion_figure,
    layer_sweep_figure,
    plot_channel_attention,
    plot_confusion,
    plot_layer_sweep,
    plot_temporal_attention,
    temporal_attention_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["neu", "hap", "ang", "sad"]


def _check_png(path: Path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > min_bytes
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_plot_confusion(tmp_path: Path) -> None:
    cm = [[50, 5, 3, 2], [10, 40, 5, 0], [2, 8, 30, 0], [6, 1, 0, 33]]
    out = plot_confusion(cm, LABELS, tmp_path / "cm.png", title="test")
    _check_png(out)
    first = out.read_bytes()
    plot_confusion(cm, LABELS, out, title="test")
    assert out.read_bytes() == first  # the same figure drawn twice in one process: the same bytes
    with pytest.raises(ValueError):
        plot_confusion([[1, 2], [3, 4]], LABELS, tmp_path / "bad.png")
    counts, recall = confusion_figure(cm, LABELS).axes[:2]
    assert np.array_equal(counts.images[0].get_array(), cm)
    assert np.allclose(recall.images[0].get_array(), 100 * np.asarray(cm) / np.sum(cm, axis=1, keepdims=True))
    assert [t.get_text() for t in counts.get_xticklabels()] == LABELS
    assert [t.get_text() for t in counts.texts[:4]] == ["50", "5", "3", "2"]  # the counts of the first row


def test_plot_channel_attention(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [LABELS[i % 4] for i in range(40)]
    att = rng.random((40, 12)) * 0.2 + np.array([0.5 if lab == "ang" else 0.3 for lab in labels])[:, None]
    _check_png(plot_channel_attention(att, labels, tmp_path / "att.png", label_order=LABELS))
    ax = channel_attention_figure(att, labels, label_order=LABELS, layer_ids=range(12)).axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    lab = np.asarray(labels)
    for name in LABELS:  # one line per emotion: the mean weight of its utterances per layer
        assert np.allclose(lines[f"{name} (n=10)"], att[lab == name].mean(axis=0))
    assert np.allclose(lines["all"], att.mean(axis=0))
    with pytest.raises(ValueError):
        plot_channel_attention(att[:3], labels, tmp_path / "bad.png")


def test_plot_layer_sweep(tmp_path: Path) -> None:
    layers = [6, 0, 3, 9, 11]
    ua = [0.62, 0.48, 0.55, 0.64, 0.60]
    _check_png(plot_layer_sweep(layers, ua, tmp_path / "sweep.png", ua_std=[0.02, 0.03, None, 0.02, 0.01]))
    ax = layer_sweep_figure(layers, ua).axes[0]
    curve, best = ax.get_lines()[0], ax.get_lines()[-1]
    assert list(curve.get_xdata()) == [0, 3, 6, 9, 11] and np.allclose(curve.get_ydata(), [48, 55, 62, 64, 60])
    assert list(best.get_xdata()) == [9] and best.get_label() == "best: layer 9 (64.00%)"


def test_plot_temporal_attention(tmp_path: Path) -> None:
    sr, seconds, frame_rate = 16000, 1.5, 50.0
    t = np.arange(int(sr * seconds)) / sr
    wav = np.sin(2 * np.pi * 220 * t) * (t > 0.5) * (t < 1.0) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    frames = int(seconds * frame_rate)
    centre = (np.arange(frames) + 0.5) / frame_rate
    att = np.exp(-((centre - 0.75) ** 2) / 0.02)
    att /= att.sum()
    _check_png(plot_temporal_attention(wav, sr, att, frame_rate, tmp_path / "temporal.png"))
    fig = temporal_attention_figure(wav, sr, att, frame_rate)
    drawn = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) == frames]
    assert len(drawn) == 2  # over the waveform and over the spectrogram
    for line in drawn:  # frame k at its centre, (k + 0.5) / frame_rate s, with its weight
        assert np.allclose(line.get_xdata(), centre) and np.allclose(line.get_ydata(), att)
    # a very short clip still works (spectrogram window shrinks)
    _check_png(plot_temporal_attention(wav[:300], sr, att[:1], frame_rate, tmp_path / "short.png"), 2000)
