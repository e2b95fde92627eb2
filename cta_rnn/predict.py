"""``cta-rnn predict`` and ``cta-rnn export``: run a trained model on audio files, or export a fold.

    cta-rnn predict --model exp/.../fold1 a.wav b.flac some_dir/ [--csv out.csv] [--json out.json]
        [--segment 4] [--plot plots/] [--adapt] [--device cuda] [--allow_unfinished]
    cta-rnn export exp/.../fold1 models/my_ser [--force] [--allow_unfinished]

One line per file (or per segment with ``--segment S``), printed as soon as that file is done: file, label,
probabilities (with ``--adapt`` after every file is encoded: the statistics need them all). ``--adapt``
normalises with statistics of all the given files, as one speaker (models trained with speaker normalisation;
otherwise the training speakers' average is used). The statistics must describe the speaker, not these clips:
with fewer than 2 clips per emotion class (8 for 4 classes) or under 30 s of audio a warning says the labels
are unreliable (one clip normalised by its own statistics loses the emotion it carries).

Warnings (stderr) flag labels that mean little: silent input, clips far shorter than the model's training
crops, and clips or ``--segment`` pieces much longer than them (more than 4 crops: lengths the model never
saw). Unreadable files are listed with the reason and do not stop the batch. Output paths are checked before
anything is encoded: ``--csv``/``--json`` may not be an input, a folder or have an audio suffix, ``--plot``
must be a folder, and their parent folders must exist or be creatable. Exit status: 0; 1 when nothing could be
predicted, a folder holds no audio or the model cannot be loaded; 2 for a bad ``--model``, ``--segment`` or
output path. A fold whose training did not finish is refused unless ``--allow_unfinished`` (then a warning
says so).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import soundfile as sf
import torch

from cta_rnn.audio import AudioError, load_audio

if TYPE_CHECKING:
    from cta_rnn.inference import EmotionRecognizer

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".sph"}
AUDIO_SUFFIXES = AUDIO_EXTS | {
    ".aac", ".aifc", ".amr", ".ape", ".au", ".caf", ".m4a", ".mka", ".mp2", ".mp4", ".oga", ".opus", ".ra", ".rf64",
    ".snd", ".spx", ".voc", ".w64", ".wav64", ".webm", ".wma", ".wv",
}  # fmt: skip
"""Suffixes an output file may not have (it would be taken for, or written over, audio)."""
MIN_ADAPT_CLIPS_PER_LABEL = 2
MIN_ADAPT_SECONDS = 30.0
"""``--adapt`` below these (clips per emotion class, total seconds) is warned about: training computes a speaker's
statistics over all of their utterances, every emotion included; from a few clips they describe the clips, and
normalising a clip by its own statistics removes what distinguishes its emotion."""
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


def segment_bounds(n: int, sample_rate: int, seconds: float | None) -> list[tuple[int, int]]:
    """(first, end) sample of each piece of ``seconds`` in ``n`` samples (a short tail joins the previous piece)."""
    if not seconds:
        return [(0, n)]
    step = max(1, int(seconds * sample_rate))
    bounds = list(range(0, n, step)) or [0]
    if len(bounds) > 1 and n - bounds[-1] < step // 2:
        bounds.pop()
    return list(zip(bounds, bounds[1:] + [n]))


def segments(wav: torch.Tensor, sample_rate: int, seconds: float | None) -> list[Segment]:
    """(start s, end s, samples) pieces of ``seconds`` (a short tail joins the previous piece)."""
    return [(a / sample_rate, b / sample_rate, wav[a:b]) for a, b in segment_bounds(wav.numel(), sample_rate, seconds)]


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
    """Why a clip's label may mean little: silence, far shorter than the crops, or it (or its ``--segment``
    pieces) much longer than them. Used by ``predict`` and the Python API alike."""
    seconds = wav.numel() / sample_rate
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    out = []
    if peak < SILENCE_PEAK:
        out.append(f"{path}: silent (peak amplitude {peak:.1e}): its label means nothing")
    short = min_segment(crop)
    if seconds < short:
        trained = f"the {crop:g}-s crops the model was trained on" if crop else f"{short:g} s"
        out.append(f"{path}: {seconds:.2f} s, far shorter than {trained}: its label is unreliable")
    longest = max(b - a for a, b in segment_bounds(wav.numel(), sample_rate, segment)) / sample_rate
    unseen = "labels of clips this long are unreliable (the model never saw such lengths)"
    if crop and longest > LONG_FACTOR * crop:
        if segment is None:
            out.append(
                f"{path}: {seconds:.1f} s, much longer than the {crop:g}-s training crops: {unseen}; "
                f"--segment {crop:g} predicts piece by piece"
            )
        else:
            out.append(
                f"{path}: --segment {segment:g} gives pieces of up to {longest:.1f} s, much longer than the "
                f"{crop:g}-s training crops: {unseen}; use --segment {crop:g}"
            )
    return out


def adapt_warning(
    clips: int, seconds: float, n_labels: int, who: str = "--adapt", instead: str = "leave out --adapt"
) -> str | None:
    """Why speaker statistics from ``clips`` clips of ``seconds`` in all may not describe the speaker (or None)."""
    need = MIN_ADAPT_CLIPS_PER_LABEL * n_labels
    if clips >= need and seconds >= MIN_ADAPT_SECONDS:
        return None
    return (
        f"{who}: speaker statistics from {clips} clip(s), {seconds:.1f} s in all; below {need} clips "
        f"({MIN_ADAPT_CLIPS_PER_LABEL} per emotion class) or {MIN_ADAPT_SECONDS:g} s they describe these clips, "
        f"not the speaker, and normalising by them can erase the emotion: labels are unreliable; give more of "
        f"this speaker's speech or {instead}"
    )


def speech_amount(files: Sequence[Path], segment: float | None) -> tuple[int, float]:
    """(pieces, seconds) the given files will give, from their headers (unreadable files are left out)."""
    pieces, seconds = 0, 0.0
    for f in files:
        try:
            info = sf.info(str(f))
        except Exception:  # noqa: BLE001 - reported with its reason when the file is read
            continue
        pieces += len(segment_bounds(info.frames, info.samplerate, segment))
        seconds += info.frames / info.samplerate
    return pieces, seconds


def _output_problem(path: Path, is_folder: bool, inputs: set[str]) -> str | None:
    """What is wrong with an output path (None: writable as far as can be told without writing)."""
    suffix = path.suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return f"has an audio suffix ({suffix}): refusing to write {'plots' if is_folder else 'results'} there"
    absolute = os.path.abspath(path)
    if absolute in inputs or (path.is_file() and any(os.path.samefile(path, f) for f in inputs if Path(f).exists())):
        return "is one of the inputs: refusing to write over it"
    if path.exists() and path.is_dir() != is_folder:
        return "is a file, not a folder" if is_folder else "is a folder: give a file name"
    ancestor = Path(absolute) if is_folder else Path(absolute).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None


def check_outputs(
    csv: Path | None, json: Path | None, plot: Path | None, inputs: Sequence[str], files: Sequence[Path]
) -> None:
    """``--csv``/``--json`` (files) and ``--plot`` (a folder) before anything is encoded (InputError, one line)."""
    given = {os.path.abspath(p) for p in [*inputs, *files]}
    if csv is not None and json is not None and os.path.abspath(csv) == os.path.abspath(json):
        raise InputError(f"--csv and --json are the same file ({csv})")
    for flag, path, is_folder in (("--csv", csv, False), ("--json", json, False), ("--plot", plot, True)):
        problem = None if path is None else _output_problem(path, is_folder, given)
        if problem:
            raise InputError(f"{flag} {path}: {problem}")


def _predict_piece(
    rec: EmotionRecognizer, item: tuple, stats: Any, plot: tuple[Path, str] | None, segment: float | None
) -> dict:
    """One row (file, start, end, label, prob_<label>..., then the model's dimensions: arousal, ... on the training
    corpus's scale) for an encoded piece; its plot drawn when asked."""
    f, start, end, piece, hidden, frames = item
    out = rec.predict_features(hidden, frames, stats)
    row = {"file": str(f), "start": round(start, 3), "end": round(end, 3), "label": out["labels"][0]}
    row.update({f"prob_{lab}": round(float(p), 6) for lab, p in zip(rec.labels, out["probs"][0])})
    row.update({name: round(float(v[0]), 4) for name, v in out.get("dimensions", {}).items()})
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
    rec: EmotionRecognizer,
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
            if adapt:  # held until every file is encoded: in host memory, never a whole speaker on the GPU
                pending.append(((f, start, end, piece, hidden[:, :, : int(frames[0])].cpu(), frames.cpu()), plot))
            else:
                yield "row", _predict_piece(rec, item, None, plot, segment)
    if pending:
        stats = rec.speaker_stats([h[0, :, : int(n[0])] for (*_, h, n), _ in pending], warn=False)
        for item, plot in pending:
            yield "row", _predict_piece(rec, item, stats, plot, segment)


def predict_files(
    rec: EmotionRecognizer,
    files: Sequence[Path],
    segment: float | None = None,
    adapt: bool = False,
    plot_dir: Path | None = None,
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Rows (file, start, end, label, prob_<label>...) and the files that failed with their reason."""
    rows, failed = [], []
    for kind, item in iter_predictions(rec, files, segment, adapt, plot_dir):
        if kind == "row":
            rows.append(item)
        elif kind == "failed":
            failed.append(item)
    return pd.DataFrame(rows), failed


def result_line(
    row: dict[str, Any], labels: Sequence[str], segment: float | None, dimensions: Sequence[str] = ()
) -> str:
    """``file [start-end s]<TAB>label<TAB>lab=p ...`` (then ``<TAB>arousal=3.12 ...`` for a model with dimensions;
    a dimensional-only model prints ``-`` as its label)."""
    probs = " ".join(f"{lab}={row[f'prob_{lab}']:.3f}" for lab in labels)
    dims = " ".join(f"{d}={row[d]:.2f}" for d in dimensions)
    where = f" [{row['start']:.2f}-{row['end']:.2f} s]" if segment else ""
    fields = [f"{row['file']}{where}", row["label"] or "-", *(x for x in (probs, dims) if x)]
    return "\t".join(fields)
