"""``cta-rnn predict`` and ``cta-rnn export``: run a trained model on audio files, or export a fold.

    cta-rnn predict --model exp/.../fold1 a.wav b.flac some_dir/ [--csv out.csv] [--json out.json]
        [--segment 4] [--plot plots/] [--adapt] [--device cuda] [--allow_unfinished]
    cta-rnn export exp/.../fold1 models/my_ser [--force] [--allow_unfinished]

One line per file (or per segment with ``--segment S``), printed as soon as that file is done: file, label,
probabilities (with ``--adapt`` after every file is encoded: the statistics need them all). ``--adapt``
normalises with statistics of all the given files, as one speaker (models trained with speaker normalisation;
otherwise the training speakers' average is used).

Warnings (stderr) flag labels that mean little: silent input, clips far shorter than the model's training
crops, and clips much longer than them without ``--segment`` (predictions drift towards neutral as clips
grow). Unreadable files are listed with the reason and do not stop the batch. Exit status: 0; 1 when nothing
could be predicted or a folder holds no audio; 2 for a bad ``--model`` or ``--segment``.
A fold whose training did not finish is refused unless ``--allow_unfinished`` (then a warning says so).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cta_rnn.artifacts import read_model_spec
from cta_rnn.audio import AudioError, load_audio
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".sph"}
MIN_SEGMENT_S = 0.25
"""No prediction on pieces shorter than this (nor shorter than a quarter of the training crops)."""
SHORT_FRACTION = 0.25
"""A clip shorter than this fraction of the training crops is warned about."""
LONG_FACTOR = 4.0
"""A clip longer than this many training crops, without ``--segment``, is warned about."""
SILENCE_PEAK = 1e-4
"""Peak amplitude (about -80 dBFS) below which a clip counts as silent."""

Segment = tuple[float, float, torch.Tensor]


class InputError(ValueError):
    """A bad ``--model``, ``--segment`` or input folder (one-line message)."""


def expand(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files as given, folders searched recursively for audio files (sorted); and a message per folder without."""
    out: list[Path] = []
    empty: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTS and f.is_file())
            if not found:
                empty.append(f"{p}: no audio files in this folder (looked for {', '.join(sorted(AUDIO_EXTS))})")
            out += found
        else:
            out.append(p)
    return out, empty


def check_model_dir(path: Path) -> None:
    """``--model`` must be an exported model or a trained fold; an experiment folder is named as such."""
    if (path / "model.json").is_file():
        return
    folds = sorted((p.parent for p in path.glob("fold*/model.json")), key=lambda p: (len(p.name), p.name))
    if folds:
        names = ", ".join(p.name for p in folds)
        raise InputError(f"{path} is an experiment folder: pass one of its folds ({names}), e.g. --model {folds[0]}")
    if not path.exists():
        raise InputError(f"{path}: no such model folder")
    raise InputError(f"{path}: not a trained fold (exp/<name>/fold<k>) or an exported model (no model.json)")


def min_segment(crop: float | None) -> float:
    """The shortest ``--segment`` accepted for a model trained on ``crop``-second crops (None: no crop)."""
    return max(MIN_SEGMENT_S, SHORT_FRACTION * crop) if crop else MIN_SEGMENT_S


def check_segment(segment: float | None, crop: float | None) -> None:
    """``--segment`` > 0 and not absurdly short for the model's training crops."""
    if segment is None:
        return
    if not segment > 0:
        raise InputError(f"--segment must be > 0 seconds, got {segment:g}")
    low = min_segment(crop)
    if segment < low:
        trained = f"the model was trained on {crop:g}-s crops; " if crop else ""
        raise InputError(f"--segment {segment:g} s is too short: {trained}use at least {low:g} s")


def segments(wav: torch.Tensor, sample_rate: int, seconds: float | None) -> list[Segment]:
    """(start s, end s, samples) pieces of ``seconds`` (a short tail joins the previous piece)."""
    if not seconds:
        return [(0.0, wav.numel() / sample_rate, wav)]
    step = int(seconds * sample_rate)
    bounds = list(range(0, wav.numel(), step))
    if len(bounds) > 1 and wav.numel() - bounds[-1] < step // 2:
        bounds.pop()
    ends = bounds[1:] + [wav.numel()]
    return [(a / sample_rate, b / sample_rate, wav[a:b]) for a, b in zip(bounds, ends)]


def plot_stems(files: Sequence[Path]) -> list[str]:
    """A distinct PNG name stem per file: its path below the files' common folder, ``/`` written ``__``.

    ``a/x.wav`` and ``b/x.wav`` give ``a__x`` and ``b__x``; ``x.wav`` and ``x.flac`` keep their suffixes; a file
    given twice gets ``-2``.
    """
    paths = [Path(os.path.abspath(f)) for f in files]
    if not paths:
        return []
    common = Path(os.path.commonpath([p.parent for p in paths]))
    rel = [p.relative_to(common) for p in paths]
    stems = ["__".join(r.with_suffix("").parts) for r in rel]
    sources: dict[str, set[Path]] = {}
    for r, s in zip(rel, stems):
        sources.setdefault(s, set()).add(r)
    stems = ["__".join(r.parts) if len(sources[s]) > 1 else s for r, s in zip(rel, stems)]
    seen: Counter[str] = Counter()
    out = []
    for s in stems:
        seen[s] += 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def clip_warnings(
    path: Path, wav: torch.Tensor, sample_rate: int, crop: float | None, segment: float | None
) -> list[str]:
    """Why a clip's label may mean little: silence, far shorter or (without --segment) much longer than the crops."""
    seconds = wav.numel() / sample_rate
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    out = []
    if peak < SILENCE_PEAK:
        out.append(f"{path}: silent (peak amplitude {peak:.1e}): its label means nothing")
    short = min_segment(crop)
    if seconds < short:
        trained = f"the {crop:g}-s crops the model was trained on" if crop else f"{short:g} s"
        out.append(f"{path}: {seconds:.2f} s, far shorter than {trained}: its label is unreliable")
    if crop and segment is None and seconds > LONG_FACTOR * crop:
        out.append(
            f"{path}: {seconds:.1f} s, much longer than the {crop:g}-s training crops: predictions drift towards "
            f"neutral on long clips; --segment {crop:g} predicts piece by piece"
        )
    return out


def _predict_piece(rec: Any, item: tuple, stats: Any, plot: tuple[Path, str] | None, segment: float | None) -> dict:
    """One row (file, start, end, label, prob_<label>...) for an encoded piece; its plot drawn when asked."""
    f, start, end, piece, hidden, frames = item
    out = rec.predict_features(hidden, frames, stats)
    row = {"file": str(f), "start": round(start, 3), "end": round(end, 3), "label": out["labels"][0]}
    row.update({f"prob_{lab}": round(float(p), 6) for lab, p in zip(rec.labels, out["probs"][0])})
    if plot is not None:
        from cta_rnn.plots import plot_temporal_attention

        plot_dir, stem = plot
        plot_temporal_attention(
            piece.numpy(),
            rec.encoder.sample_rate,
            out["temporal"][0, : int(out["frames"][0])].numpy(),
            float(rec.hparams.frame_rate),
            plot_dir / (f"{stem}_{start:.1f}s.png" if segment else f"{stem}.png"),
            title=f"{Path(f).name}: {out['labels'][0]}",
        )
    return row


def iter_predictions(
    rec: Any,
    files: Sequence[Path],
    segment: float | None = None,
    adapt: bool = False,
    plot_dir: Path | None = None,
    crop: float | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("row", row)``, ``("failed", {file, reason})`` and ``("warning", {file, warning})``, file by file.

    Without ``adapt`` each file's rows come as soon as it is encoded; with it, after every file (one speaker's
    statistics over all of them).
    """
    sr = rec.encoder.sample_rate
    stems = plot_stems(files) if plot_dir is not None else [""] * len(files)
    pending = []
    for f, stem in zip(files, stems):
        try:
            wav = load_audio(f, sr)
        except AudioError as err:
            yield "failed", {"file": str(f), "reason": err.reason}
            continue
        for warning in clip_warnings(f, wav, sr, crop, segment):
            yield "warning", {"file": str(f), "warning": warning}
        plot = (plot_dir, stem) if plot_dir is not None else None
        for start, end, piece in segments(wav, sr, segment):
            hidden, frames = rec.features(piece[None], torch.ones(1))
            item = (f, start, end, piece, hidden, frames)
            if adapt:
                pending.append((item, plot))
            else:
                yield "row", _predict_piece(rec, item, None, plot, segment)
    if pending:
        stats = rec.speaker_stats([h[0, :, : int(n[0])] for (*_, h, n), _ in pending])
        for item, plot in pending:
            yield "row", _predict_piece(rec, item, stats, plot, segment)


def predict_files(
    rec: Any, files: Sequence[Path], segment: float | None = None, adapt: bool = False, plot_dir: Path | None = None
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Rows (file, start, end, label, prob_<label>...) and the files that failed with their reason."""
    rows, failed = [], []
    for kind, item in iter_predictions(rec, files, segment, adapt, plot_dir):
        if kind == "row":
            rows.append(item)
        elif kind == "failed":
            failed.append(item)
    return pd.DataFrame(rows), failed


def one_line(err: BaseException) -> str:
    """An error message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def result_line(row: dict[str, Any], labels: Sequence[str], segment: float | None) -> str:
    """``file [start-end s]<TAB>label<TAB>lab=p ...``."""
    probs = " ".join(f"{lab}={row[f'prob_{lab}']:.3f}" for lab in labels)
    where = f" [{row['start']:.2f}-{row['end']:.2f} s]" if segment else ""
    return f"{row['file']}{where}\t{row['label']}\t{probs}"


def main_predict(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn predict``."""
    from cta_rnn.inference import EmotionRecognizer

    p = argparse.ArgumentParser(
        prog="cta-rnn predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, type=Path, help="exported model folder or exp/.../fold<k>")
    p.add_argument("inputs", nargs="+", help="audio files and/or folders")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--segment", type=float, default=None, help="predict per segment of this many seconds")
    p.add_argument("--adapt", action="store_true", help="speaker statistics from the given files (one speaker)")
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="folder for temporal-attention PNGs")
    p.add_argument("--allow_unfinished", action="store_true", help="use a fold whose training did not finish")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        check_model_dir(args.model)
        crop = read_model_spec(args.model).get("max_train_seconds")
        check_segment(args.segment, crop)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files, empty = expand(args.inputs)
    for msg in empty:
        print(f"error: {msg}", file=sys.stderr)
    try:
        rec = EmotionRecognizer.from_dir(args.model, device=args.device, allow_unfinished=args.allow_unfinished)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    rows, failed, warnings = [], [], []
    for kind, item in iter_predictions(rec, files, args.segment, args.adapt, args.plot, crop):
        if kind == "row":
            rows.append(item)
            print(result_line(item, rec.labels, args.segment), flush=True)
        elif kind == "failed":
            failed.append(item)
            print(f"{item['file']}\tERROR\t{item['reason']}", file=sys.stderr, flush=True)
        else:
            warnings.append(item)
            print(f"WARNING: {item['warning']}", file=sys.stderr, flush=True)
    if args.csv:
        atomic_to_csv(pd.DataFrame(rows), args.csv)
    if args.json:
        atomic_write_json(args.json, {"predictions": rows, "failed": failed, "warnings": warnings})
    return 0 if rows and not empty else 1


def main_export(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn export``."""
    from cta_rnn.inference import export_fold

    p = argparse.ArgumentParser(prog="cta-rnn export", description="export a trained fold as a model folder")
    p.add_argument("fold_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--allow_unfinished", action="store_true", help="export a fold whose training did not finish")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        check_model_dir(args.fold_dir)
        out = export_fold(args.fold_dir, args.out_dir, args.force, allow_unfinished=args.allow_unfinished)
    except (OSError, ValueError, RuntimeError) as err:  # InputError is a ValueError
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    print(f"exported {args.fold_dir} -> {out}")
    return 0
