"""Stage 1 pipeline costs, measured in one run on the same audio (ratios printed, nothing asserted).

1. whole dump (audio reading in a DataLoader worker, resampling, batching, float16 store writes) vs the
   bare encoder forward on the same, already loaded batches: target <= 1.3x;
2. store bytes vs float32 per-utterance .npy files of all frames: target <= 0.5x;
3. store random-read throughput (utterances/s), as training reads it.

    python benchmarks/bench_dump.py --manifest recipes/mini/data/manifest.csv [--n 60] [--encoder whisper_tiny_en]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from cta_rnn.audio import load_audio
from cta_rnn.dump import collate, dump, duration_batches, load_encoder_spec
from cta_rnn.encoders import build_encoder
from cta_rnn.io_utils import read_manifest
from cta_rnn.store import EmbeddingStore, finalize

ENC_DIR = Path(__file__).resolve().parents[1] / "recipes" / "shared" / "hparams" / "encoder"


def main() -> None:
    """Run the three measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--n", type=int, default=60, help="utterances to use")
    ap.add_argument("--encoder", default="whisper_tiny_en")
    ap.add_argument("--batch_seconds", type=float, default=60.0)
    args = ap.parse_args()
    manifest = read_manifest(args.manifest).head(args.n)
    _, spec = load_encoder_spec(ENC_DIR / f"{args.encoder}.yaml")
    encoder = build_encoder(spec)
    audio_s = float(manifest["duration"].sum())

    # bare forward: audio loaded beforehand, same batches as the dump
    wavs = {r.ID: load_audio(r.wav) for r in manifest.itertuples()}
    batches = duration_batches(manifest["duration"].tolist(), args.batch_seconds)
    ids = manifest["ID"].tolist()
    encoder.encode(wavs[ids[0]][None], torch.ones(1))  # warm-up
    start = time.perf_counter()
    for b in batches:
        batch = collate([(ids[i], wavs[ids[i]], "") for i in b])
        encoder.encode(batch["wavs"], batch["lengths"])
    bare = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        start = time.perf_counter()
        dump(manifest, encoder, store_dir, batch_seconds=args.batch_seconds, num_workers=1)
        finalize(store_dir, ids)
        full = time.perf_counter() - start
        store_bytes = sum(p.stat().st_size for p in (store_dir / "shards").glob("*.bin"))
        store = EmbeddingStore(store_dir)
        npy_bytes = sum(store.frames(i) * len(store.layers) * store.dim * 4 + 128 for i in ids)
        order = [random.Random(0).choice(ids) for _ in range(2000)]
        start = time.perf_counter()
        for uid in order:
            store.get(uid)
        reads = len(order) / (time.perf_counter() - start)
        x = store.get(ids[0])
    print(f"utterances {len(ids)}, audio {audio_s:.1f} s, encoder {args.encoder}, threads {torch.get_num_threads()}")
    print(f"bare encoder forward    {bare:7.2f} s  (RTF {bare / audio_s:.3f})")
    print(f"whole dump pipeline     {full:7.2f} s  (RTF {full / audio_s:.3f})")
    print(f"dump / bare forward     {full / bare:7.2f} x   (target <= 1.3)")
    print(f"store / float32 .npy    {store_bytes / npy_bytes:7.2f} x   (target <= 0.5; {store_bytes / 2**20:.1f} MiB)")
    print(f"random reads            {reads:7.0f} utt/s ({tuple(x.shape)} each, float16 -> float32)")


if __name__ == "__main__":
    main()
