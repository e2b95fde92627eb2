"""``cta-rnn predict`` and ``cta-rnn export``: run a trained model on audio files, or export a fold.

    cta-rnn predict --model exp/.../fold1 a.wav b.flac some_dir/ [--csv out.csv] [--json out.json]
        [--segment 4] [--plot plots/] [--adapt] [--device cuda]
    cta-rnn export exp/.../fold1 models/my_ser [--force]

One line per file (or per segment with ``--segment S``): file, label, probabilities. Unreadable files
are listed with the reason and do not stop the batch (exit status 1 only when nothing could be read).
``--adapt`` normalises with statistics of all the given files, as one speaker (models trained with
speaker normalisation; otherwise the training speakers' average is used).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cta_rnn.audio import AudioError, load_audio
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".sph"}


def expand(paths: Sequence[str]) -> list[Path]:
    """Files as given, folders searched recursively for audio files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTS and f.is_file())
        else:
            out.append(p)
    return out


def segments(wav: torch.Tensor, sample_rate: int, seconds: float | None) -> list[tuple[float, float, torch.Tensor]]:
    """(start s, end s, samples) pieces of ``seconds`` (a short tail joins the previous piece)."""
    if not seconds:
        return [(0.0, wav.numel() / sample_rate, wav)]
    step = int(seconds * sample_rate)
    bounds = list(range(0, wav.numel(), step))
    if len(bounds) > 1 and wav.numel() - bounds[-1] < step // 2:
        bounds.pop()
    ends = bounds[1:] + [wav.numel()]
    return [(a / sample_rate, b / sample_rate, wav[a:b]) for a, b in zip(bounds, ends)]


def predict_files(
    rec: Any, files: Sequence[Path], segment: float | None = None, adapt: bool = False, plot_dir: Path | None = None
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Rows (file, start, end, label, prob_<label>...) and the files that failed with their reason."""
    sr = rec.encoder.sample_rate
    loaded, failed = [], []
    for f in files:
        try:
            loaded.append((f, load_audio(f, sr)))
        except AudioError as err:
            failed.append({"file": str(f), "reason": err.reason})
    feats = []
    for f, wav in loaded:
        for start, end, piece in segments(wav, sr, segment):
            hidden, frames = rec.features(piece[None], torch.ones(1))
            feats.append((f, start, end, piece, hidden, frames))
    stats = rec.speaker_stats([h[0, :, : int(n[0])] for *_, h, n in feats]) if adapt and feats else None
    rows = []
    for f, start, end, piece, hidden, frames in feats:
        out = rec.predict_features(hidden, frames, stats)
        row = {"file": str(f), "start": round(start, 3), "end": round(end, 3), "label": out["labels"][0]}
        row.update({f"prob_{lab}": round(float(p), 6) for lab, p in zip(rec.labels, out["probs"][0])})
        rows.append(row)
        if plot_dir is not None:
            from cta_rnn.plots import plot_temporal_attention

            name = f"{Path(f).stem}_{start:.1f}s.png" if segment else f"{Path(f).stem}.png"
            plot_temporal_attention(
                piece.numpy(),
                sr,
                out["temporal"][0, : int(out["frames"][0])].numpy(),
                float(rec.hparams.frame_rate),
                plot_dir / name,
                title=f"{Path(f).name}: {out['labels'][0]}",
            )
    return pd.DataFrame(rows), failed


def main_predict(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn predict``."""
    from cta_rnn.inference import EmotionRecognizer

    p = argparse.ArgumentParser(
        prog="cta-rnn predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="exported model folder or exp/.../fold<k>")
    p.add_argument("inputs", nargs="+", help="audio files and/or folders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--segment", type=float, default=None, help="predict per segment of this many seconds")
    p.add_argument("--adapt", action="store_true", help="speaker statistics from the given files (one speaker)")
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="folder for temporal-attention PNGs")
    args = p.parse_args(argv)
    rec = EmotionRecognizer.from_dir(args.model, device=args.device)
    files = expand(args.inputs)
    rows, failed = predict_files(rec, files, args.segment, args.adapt, args.plot)
    for r in rows.to_dict("records"):
        probs = " ".join(f"{lab}={r[f'prob_{lab}']:.3f}" for lab in rec.labels)
        where = f" [{r['start']:.2f}-{r['end']:.2f} s]" if args.segment else ""
        print(f"{r['file']}{where}\t{r['label']}\t{probs}")
    for f in failed:
        print(f"{f['file']}\tERROR\t{f['reason']}", file=sys.stderr)
    if args.csv:
        atomic_to_csv(rows, args.csv)
    if args.json:
        atomic_write_json(args.json, {"predictions": rows.to_dict("records"), "failed": failed})
    return 0 if len(rows) or not files else 1


def main_export(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn export``."""
    from cta_rnn.inference import export_fold

    p = argparse.ArgumentParser(prog="cta-rnn export", description="export a trained fold as a model folder")
    p.add_argument("fold_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = p.parse_args(argv)
    out = export_fold(args.fold_dir, args.out_dir, args.force)
    print(f"exported {args.fold_dir} -> {out}")
    return 0
