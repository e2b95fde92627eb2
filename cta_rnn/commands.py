"""The commands that use a trained model: ``cta-rnn predict``, ``cta-rnn export`` and ``cta-rnn timeline`` (their
libraries: :mod:`cta_rnn.predict`, :mod:`cta_rnn.inference`, :mod:`cta_rnn.timeline`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from cta_rnn.artifacts import read_model_spec
from cta_rnn.audio import AudioError
from cta_rnn.inference import EmotionRecognizer, export_fold
from cta_rnn.io_utils import atomic_to_csv, atomic_write_json, one_line
from cta_rnn.predict import (
    MIN_ADAPT_CLIPS_PER_LABEL,
    MIN_ADAPT_SECONDS,
    InputError,
    adapt_warning,
    check_model_dir,
    check_outputs,
    check_segment,
    expand,
    iter_predictions,
    result_line,
    speech_amount,
)
from cta_rnn.rttm import RTTMError, read_rttm
from cta_rnn.timeline import (
    analyse,
    check_timeline_outputs,
    check_window,
    default_window,
    plot_result,
    run_live,
    segment_line,
)
from cta_rnn.vad import VAD_CHOICES, silero_available


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--device`` and ``--allow_unfinished``: how predict and timeline find and run a model."""
    p.add_argument("--model", required=True, type=Path, help="exported model folder or exp/.../fold<k>")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--allow_unfinished", action="store_true", help="use a fold whose training did not finish")


def model_spec_of(model: Path) -> dict:
    """The ``model.json`` of a model folder, after checking it is one (:class:`InputError` naming what is wrong)."""
    check_model_dir(model)
    return read_model_spec(model)


def main_predict(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn predict``."""
    p = argparse.ArgumentParser(
        prog="cta-rnn predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("inputs", nargs="+", help="audio files and/or folders")
    add_model_options(p)
    p.add_argument("--segment", type=float, default=None, help="predict per segment of this many seconds")
    p.add_argument(
        "--adapt",
        action="store_true",
        help="speaker statistics from the given files (one speaker); with fewer than "
        f"{MIN_ADAPT_CLIPS_PER_LABEL} clips per emotion class or {MIN_ADAPT_SECONDS:g} s in all a warning says the "
        "labels are unreliable",
    )
    p.add_argument("--csv", type=Path, default=None, help="write the rows here (not an input, no audio suffix)")
    p.add_argument("--json", type=Path, default=None, help="rows, failed files and warnings (not an input)")
    p.add_argument("--plot", type=Path, default=None, help="folder for temporal-attention PNGs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        spec = model_spec_of(args.model)
        crop = spec.get("max_train_seconds")
        check_segment(args.segment, crop)
        files, empty = expand(args.inputs)
        check_outputs(args.csv, args.json, args.plot, args.inputs, files)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for msg in empty:
        print(f"error: {msg}", file=sys.stderr)
    warnings = []
    if args.adapt:
        if spec.get("normalization") != "speaker":
            msg = (
                f"--adapt has no effect: {args.model} was trained with {spec.get('normalization')!r} "
                "normalisation, not per-speaker statistics"
            )
        else:
            msg = adapt_warning(*speech_amount(files, args.segment), len(spec["labels"]))
        if msg:
            warnings.append({"file": None, "warning": msg})
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    try:
        rec = EmotionRecognizer.from_dir(args.model, device=args.device, allow_unfinished=args.allow_unfinished)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    rows, failed = [], []
    for kind, item in iter_predictions(rec, files, args.segment, args.adapt, args.plot, crop):
        if kind == "row":
            rows.append(item)
            print(result_line(item, rec.labels, args.segment, rec.dimensions), flush=True)
        elif kind == "failed":
            failed.append(item)
            print(f"{item['file']}\tERROR\t{item['reason']}", file=sys.stderr, flush=True)
        else:
            warnings.append(item)
            print(f"WARNING: {item['warning']}", file=sys.stderr, flush=True)
    try:
        if args.json:
            atomic_write_json(args.json, {"predictions": rows, "failed": failed, "warnings": warnings})
        if args.csv:
            atomic_to_csv(pd.DataFrame(rows), args.csv)
    except OSError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0 if rows and not empty else 1


def main_export(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn export``."""
    p = argparse.ArgumentParser(prog="cta-rnn export", description="export a trained fold as a model folder")
    p.add_argument("fold_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier export in out_dir (a folder holding anything else, the fold itself, a folder "
        "inside it or containing it is always refused)",
    )
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


def main_timeline(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cta-rnn timeline``."""

    p = argparse.ArgumentParser(
        prog="cta-rnn timeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", help="audio file (any rate/channels/format soundfile reads), or - with --live")
    add_model_options(p)
    p.add_argument("--vad", choices=VAD_CHOICES, default="silero", help="speech detector (default silero)")
    p.add_argument("--window", type=float, default=None, help="analysis window, s (default: the training crop)")
    p.add_argument("--hop", type=float, default=None, help="hop between windows, s (default: window / 2)")
    p.add_argument(
        "--smooth", type=int, default=3, help="median over this many consecutive windows (odd; default 3; 1 = none)"
    )
    p.add_argument("--rttm", type=Path, default=None, help="diarisation (RTTM): a speaker per segment")
    p.add_argument("--file_id", default=None, help="RTTM file id of the recording (default: its file name stem)")
    p.add_argument("--adapt", action="store_true", help="normalise each speaker with their own statistics")
    p.add_argument("--batch_size", type=int, default=None, help="windows encoded at once (default 1 on CPU, 8 on GPU)")
    p.add_argument("--csv", type=Path, default=None, help="write the segments here")
    p.add_argument("--json", type=Path, default=None, help="segments, speech regions and warnings as JSON")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the timeline")
    p.add_argument("--live", action="store_true", help="read 16-bit PCM from standard input (input: -)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 with --live, where one window at a time gains little from more "
        "and a busy CPU makes them stall; torch's default otherwise)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        spec = model_spec_of(args.model)
        crop = spec.get("max_train_seconds")
        window = args.window or default_window(crop)[0]
        hop = args.hop or window / 2
        early = check_window(window, hop, args.smooth, crop)
        if args.batch_size is not None and args.batch_size < 1:
            raise InputError(f"--batch_size must be >= 1, got {args.batch_size}")
        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        if args.live:
            if args.input != "-":
                raise InputError(f"--live reads standard input: give - as the input, not {args.input}")
            extra = [f for f in ("rttm", "adapt", "csv", "json", "plot") if getattr(args, f)]
            if extra:
                raise InputError(f"--live prints lines only: --{extra[0]} needs a recording, not a stream")
        elif args.input == "-":
            raise InputError("reading standard input needs --live")
        check_timeline_outputs(args.csv, args.json, args.plot, [args.input, *([str(args.rttm)] if args.rttm else [])])
        if args.rttm is not None:
            read_rttm(args.rttm)  # a malformed file is refused before the model is loaded
    except (InputError, RTTMError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for msg in early:
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    before = torch.get_num_threads()
    threads = args.threads or (1 if args.live else None)
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(args, window, hop, early)
    finally:
        torch.set_num_threads(before)  # main may be called in-process (tests, notebooks)


def _run(args: argparse.Namespace, window: float, hop: float, early: list[str]) -> int:
    """The checked command: load the model, then live or one recording."""
    try:
        rec = EmotionRecognizer.from_dir(args.model, device=args.device, allow_unfinished=args.allow_unfinished)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    if args.live:
        vad = args.vad
        if vad == "silero" and not silero_available():
            print("WARNING: --vad silero: silero-vad is not installed; using --vad energy", file=sys.stderr)
            vad = "energy"
        try:
            return run_live(rec, sys.stdin.buffer, window, hop, vad)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
    try:
        result = analyse(
            rec,
            args.input,
            vad=args.vad,
            window=window,
            hop=hop,
            smooth=args.smooth,
            rttm=args.rttm,
            file_id=args.file_id,
            adapt=args.adapt,
            batch_size=args.batch_size,
            progress=not args.quiet,
            on_segment=lambda row: print(segment_line(row), flush=True),
        )
    except (InputError, RTTMError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except AudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for msg in result.warnings:
        if msg not in early:
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    try:
        if args.json:
            atomic_write_json(args.json, result.to_json(str(args.model)))
        if args.csv:
            atomic_to_csv(result.segments, args.csv)
        if args.plot:
            plot_result(result, args.plot)
    except OSError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0
