"""Real-time factor of ``cta-rnn timeline`` with a real model (default: the mini recipe's Whisper tiny.en fold).

Live: espeak-ng speech is fed as 16-kHz S16_LE PCM through :func:`cta_rnn.timeline.iter_live` (the code behind
``--live -``); each hop's latency is the processing time of its window (resampling, speech check, encoder, model).
Live keeps up while latency < hop: the ratio latency / hop is printed (and latency / window). File: the same
speech written to a WAV file and run through :func:`cta_rnn.timeline.analyse` (both passes), total time / audio
time. ``--input trimmed`` overrides the encoder's ``input`` for this run only (the model was trained on padded
features: its labels then shift; this measures speed, not accuracy). Not a test; numbers depend on the machine
and its load.

    python benchmarks/bench_timeline.py [--model exp/.../fold1] [--input padded|trimmed] [--hops 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cta_rnn.inference import EmotionRecognizer
from cta_rnn.timeline import analyse, default_window, iter_live
from cta_rnn.tts import synthesize

ROOT = Path(__file__).resolve().parents[1]
SEARCH = [ROOT / "recipes" / "mini" / "exp", Path("/work/base/recipes/mini/exp")]
TEXT = (
    "I was thinking we could go for a walk in the park this afternoon, if the weather stays nice. "
    "Can you call me back when you get home tonight? I really need to talk to you about the trip. "
)


def find_fold() -> Path:
    """The first finished mini fold (with test_results.json) under the recipe's exp folders."""
    for root in SEARCH:
        for fold in sorted(root.glob("*/fold*/test_results.json")):
            return fold.parent
    raise SystemExit("no finished mini fold found: run ./run.sh in recipes/mini or pass --model")


def speech(seconds: float, sr: int = 16000) -> np.ndarray:
    """At least ``seconds`` of espeak-ng speech (sentences repeated), float32 at ``sr``."""
    one = synthesize(TEXT, sample_rate=sr)
    return np.tile(one, int(np.ceil(seconds * sr / one.size)))[: int(seconds * sr)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--input", choices=("padded", "trimmed"), default=None, help="encoder input override")
    parser.add_argument("--hops", type=int, default=10, help="live windows to time (after one warm-up)")
    parser.add_argument("--file_seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vad", default="silero")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fold = args.model or find_fold()
    overrides = {"input": args.input} if args.input else None
    rec = EmotionRecognizer.from_dir(fold, encoder_overrides=overrides)
    window, hop = default_window(rec.crop)
    mode = rec.encoder.describe().get("input", "?") if hasattr(rec.encoder, "describe") else "?"
    print(f"model {fold}; encoder input {mode}; window {window:g} s, hop {hop:g} s; {args.threads} thread(s)")

    audio = speech(window + (args.hops + 1) * hop)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    rows = list(iter_live(rec, io.BytesIO(pcm), window, hop, args.vad))
    lat = [r["latency"] for r in rows[1:]]  # the first one warms up
    med, mean = statistics.median(lat), statistics.fmean(lat)
    slow = sum(x > hop for x in lat)
    print(
        f"live: {len(lat)} windows, latency min {min(lat):.3f} s, median {med:.3f} s, mean {mean:.3f} s, "
        f"max {max(lat):.3f} s; "
        f"median latency / hop = {med / hop:.3f}, latency / window = {med / window:.3f}; "
        f"{slow} window(s) over the hop; {'keeps up' if mean < hop else 'FALLS BEHIND'} (mean latency vs hop)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        sf.write(path, speech(args.file_seconds), 16000, subtype="PCM_16")
        start = time.perf_counter()
        result = analyse(rec, path, vad=args.vad)
        took = time.perf_counter() - start
    print(
        f"file: {args.file_seconds:g} s of speech in {took:.1f} s: real-time factor {took / args.file_seconds:.3f} "
        f"({len(result.segments)} segments, speech {sum(b - a for a, b in result.speech):.1f} s)"
    )


if __name__ == "__main__":
    main()
