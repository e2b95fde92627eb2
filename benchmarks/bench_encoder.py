"""Embedded Whisper tiny.en encoder on 3-10 s espeak-ng clips: trimmed vs padded input, bf16 vs fp32.

Prints, from one run: per-clip forward time ratios (padded / trimmed, fp32 / bf16) and the mean frame
cosine per layer between the variants. Not a test; numbers depend on the machine and its load.

    python benchmarks/bench_encoder.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cta_rnn.encoders import build_encoder
from cta_rnn.tts import synthesize

YAML = Path(__file__).resolve().parents[1] / "recipes" / "shared" / "hparams" / "encoder" / "whisper_tiny_en.yaml"
TEXTS = [  # about 3, 5, 7 and 10 s at espeak-ng's default rate
    "Hello there, how are you doing today, my friend?",
    "I was thinking we could go for a walk in the park this afternoon, if the weather stays nice.",
    "Can you call me back when you get home tonight? I really need to talk to you about the trip next week, "
    "because the tickets are expensive.",
    "Thank you very much for your help yesterday. I could not have finished the move without you, and the kids "
    "loved seeing you again. Let us have dinner together soon, maybe on Sunday evening.",
]


def timed(enc, wav: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeats`` forwards (after one warm-up) and the hidden states."""
    lengths = torch.ones(1)
    hidden, _ = enc.encode(wav, lengths)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        enc.encode(wav, lengths)
        times.append(time.perf_counter() - start)
    return statistics.median(times), hidden[0]


def layer_cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Mean frame cosine per layer of two (layers, T, D) tensors."""
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean(-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "padded": build_encoder(YAML),
        "trimmed": build_encoder(YAML, input="trimmed"),
        "padded_bf16": build_encoder(YAML, dtype="bfloat16"),
    }
    print(f"tiny.en, {args.threads} thread(s), median of {args.repeats}; torch {torch.__version__}")
    print(f"{'clip_s':>6} {'padded_s':>9} {'trimmed_s':>9} {'pad/trim':>8} {'bf16_s':>8} {'fp32/bf16':>9}")
    cos_trim, cos_bf16, ratios_trim, ratios_bf16 = [], [], [], []
    for text in TEXTS:
        wav = torch.from_numpy(synthesize(text))[None]
        res = {name: timed(enc, wav, args.repeats) for name, enc in variants.items()}
        (tp, hp), (tt, ht), (tb, hb) = res["padded"], res["trimmed"], res["padded_bf16"]
        ratios_trim.append(tp / tt)
        ratios_bf16.append(tp / tb)
        cos_trim.append(layer_cosine(ht, hp))
        cos_bf16.append(layer_cosine(hb, hp))
        print(f"{wav.shape[1] / 16000:6.1f} {tp:9.3f} {tt:9.3f} {tp / tt:8.1f} {tb:8.3f} {tp / tb:9.2f}")
    mean = lambda rows: [sum(col) / len(col) for col in zip(*rows)]  # noqa: E731
    print("trimmed vs padded, mean frame cosine per layer:", " ".join(f"{c:.4f}" for c in mean(cos_trim)))
    print("bf16 vs fp32 (padded), mean frame cosine per layer:", " ".join(f"{c:.5f}" for c in mean(cos_bf16)))
    print(
        f"speed ratio padded/trimmed: {min(ratios_trim):.1f}x-{max(ratios_trim):.1f}x; "
        f"fp32/bf16: {min(ratios_bf16):.2f}x-{max(ratios_bf16):.2f}x"
    )


if __name__ == "__main__":
    main()
