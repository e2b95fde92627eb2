"""Stage 1 costs, measured in one run on the same audio (ratios printed, nothing asserted).

1. whole ``dump()`` (audio read in DataLoader workers, batching, float16 cast + checks on the device, writes,
   crc32 and journal in the writer thread) vs the bare ``encoder.encode()`` of the same batches with the audio
   already in memory: ``dump_over_bare`` (target <= 1.2 on the mini corpus on CPU, <= 1.3 for large-v3 on a GPU);
2. store size: GB per audio hour, and against float32 per-utterance .npy files;
3. store random reads (utterances/s), float16 (``read``) and float32 (``get``).

    # the mini corpus with the real tiny.en (embedded package), as the mini recipe dumps it
    python benchmarks/bench_dump.py --manifest recipes/mini/data/manifest.csv [--n 60] [--encoder whisper_tiny_en]
    # random-weight Whisper of a real shape (no hub) on synthetic clips of IEMOCAP-like length
    python benchmarks/bench_dump.py --shape large-v3 --device cuda [--n 384] [--frame_pool 2]
    # crc32 checks vs a plain read on a synthetic large-v3-shaped store of 2 GB
    python benchmarks/bench_dump.py --verify_gb 2

The last line is ``RESULT dump_over_bare=... store_gb_per_audio_hour=... ...``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from cta_rnn.audio import load_audio
from cta_rnn.dump import collate, dump, duration_batches, load_encoder_spec
from cta_rnn.encoders import build_encoder
from cta_rnn.store import EmbeddingStore, StoreWriter, finalize

ENC_DIR = Path(__file__).resolve().parents[1] / "recipes" / "shared" / "hparams" / "encoder"
SHAPES = {  # Whisper encoder shapes: mel bins, width, blocks, heads, feed-forward
    "large-v3": {
        "num_mel_bins": 128,
        "d_model": 1280,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
    },
    "tiny": {
        "num_mel_bins": 80,
        "d_model": 384,
        "encoder_layers": 4,
        "encoder_attention_heads": 6,
        "encoder_ffn_dim": 1536,
    },
}


def random_whisper(shape: str, folder: Path) -> dict[str, Any]:
    """Save a random-weight Whisper of ``shape`` (1 decoder layer) and its extractor; return an encoder spec."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    s = SHAPES[shape]
    config = WhisperConfig(
        **s,
        decoder_layers=1,
        decoder_attention_heads=s["encoder_attention_heads"],
        decoder_ffn_dim=s["encoder_ffn_dim"],
    )
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=s["num_mel_bins"]).save_pretrained(folder)
    return {"backend": "whisper", "source": str(folder), "layers": "all", "input": "padded", "dtype": "auto"}


def synthetic_corpus(folder: Path, n: int, mean_s: float = 4.23, seed: int = 0) -> pd.DataFrame:
    """``n`` 16-kHz noise-modulated tones with gamma-distributed lengths (mean ``mean_s``, 1-20 s)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, dur in enumerate(np.clip(rng.gamma(4.0, mean_s / 4.0, n), 1.0, 20.0)):
        t = np.arange(int(16000 * dur)) / 16000
        wav = 0.2 * np.sin(2 * np.pi * (100 + 5 * i) * t) * (1 + np.sin(5 * t)) + 0.01 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, wav.astype(np.float32), 16000)
        rows.append({"ID": f"clip{i:04d}", "wav": str(path), "duration": t.size / 16000})
    return pd.DataFrame(rows)


def sync(device: str) -> None:
    """Wait for queued device work (timings of asynchronous CUDA calls)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_bare(encoder: Any, manifest: pd.DataFrame, batch_seconds: float, device: str) -> float:
    """Seconds of ``encoder.encode`` on the dump's batches, audio loaded beforehand (one warm-up batch)."""
    ids = manifest["ID"].tolist()
    wavs = {r.ID: load_audio(r.wav) for r in manifest.itertuples()}
    batches = [
        collate([(ids[i], wavs[ids[i]], "") for i in b])
        for b in duration_batches(manifest["duration"].tolist(), batch_seconds)
    ]
    encoder.encode(batches[0]["wavs"].to(device), batches[0]["lengths"])
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        encoder.encode(batch["wavs"].to(device), batch["lengths"])
    sync(device)
    return time.perf_counter() - start


def read_rates(store: EmbeddingStore, n: int = 2000) -> tuple[float, float]:
    """Random whole-utterance reads per second: float16 ``read`` and float32 ``get`` (crc32 already checked)."""
    ids = store.ids()
    order = [random.Random(0).choice(ids) for _ in range(n)]
    rates = []
    for fn in (store.read, store.get):
        start = time.perf_counter()
        for uid in order:
            fn(uid)
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def bench_verify(gb: float, folder: Path) -> None:
    """A synthetic store of large-v3 shape (33 x 1280, 211-frame utterances = 4.23 s): the cost of checking
    every crc32 (``verify()``, and the first ``read()`` of each utterance) against a plain read of the bytes."""
    layers, frames, dim = 33, 211, 1280
    n = max(1, int(gb * 1e9 // (layers * frames * dim * 2)))
    meta = {"encoder": {"backend": "synthetic"}, "layers": list(range(layers)), "dim": dim, "frame_rate": 50.0,
            "manifest_checksum": "synthetic"}  # fmt: skip
    utt = np.random.default_rng(0).standard_normal((layers, frames, dim), dtype=np.float32).astype(np.float16)
    with StoreWriter(folder, meta) as w:
        for i in range(n):
            utt[0, 0, 0] = i  # distinct utterances
            w.add(f"u{i:05d}", utt, finite=True)
    finalize(folder)
    shards = sorted((folder / "shards").glob("*.bin"))
    size = sum(p.stat().st_size for p in shards)
    buf = bytearray(max(p.stat().st_size for p in shards))
    timings = {}
    start = time.perf_counter()
    for p in shards:
        with open(p, "rb", buffering=0) as f:
            f.readinto(buf)
    timings["plain_read"] = time.perf_counter() - start
    start = time.perf_counter()
    problems = EmbeddingStore(folder).verify()
    timings["verify"] = time.perf_counter() - start
    store = EmbeddingStore(folder)
    for key in ("first_read", "later_read"):  # float16 read() of every utterance: with, then without the crc32
        start = time.perf_counter()
        for uid in store.ids():
            store.read(uid)
        timings[key] = time.perf_counter() - start
    print(f"synthetic store: {n} utterances of {layers} x {frames} x {dim} float16, {size / 1e9:.2f} GB (page cache)")
    for key, t in timings.items():
        print(f"{key:12s} {t:7.3f} s  {size / 1e9 / t:6.2f} GB/s  {t / timings['plain_read']:5.2f} x plain read")
    assert not problems, problems[:3]
    print(
        f"RESULT verify_over_read={timings['verify'] / timings['plain_read']:.2f} "
        f"first_read_over_later_read={timings['first_read'] / timings['later_read']:.2f} "
        f"verify_gb_per_s={size / 1e9 / timings['verify']:.2f} read_gb_per_s={size / 1e9 / timings['plain_read']:.2f} "
        f"store_gb={size / 1e9:.2f}"
    )


def main() -> None:
    """Run the measurements and print them, ending with the RESULT line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", help="manifest CSV (default mode: real encoder from --encoder)")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="random-weight Whisper of this shape on synthetic clips")
    ap.add_argument("--n", type=int, default=None, help="utterances (default 60 from a manifest, 384 synthetic)")
    ap.add_argument("--encoder", default="whisper_tiny_en", help="encoder YAML stem (with --manifest)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch_seconds", type=float, default=60.0)
    ap.add_argument("--num_workers", type=int, default=1)
    ap.add_argument("--frame_pool", type=int, default=None, help="override the YAML's frame_pool")
    ap.add_argument("--verify_gb", type=float, help="only time integrity checks on a synthetic large-v3 store")
    args = ap.parse_args()
    if sum(map(bool, (args.manifest, args.shape, args.verify_gb))) != 1:
        ap.error("give exactly one of --manifest, --shape and --verify_gb")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.verify_gb:
            return bench_verify(args.verify_gb, tmp / "store")
        if args.shape:
            (tmp / "model").mkdir(), (tmp / "wav").mkdir()
            spec, name = random_whisper(args.shape, tmp / "model"), f"random whisper {args.shape}"
            manifest = synthetic_corpus(tmp / "wav", args.n or 384)
        else:
            from cta_rnn.artifacts import read_manifest

            _, spec = load_encoder_spec(ENC_DIR / f"{args.encoder}.yaml")
            name, manifest = args.encoder, read_manifest(args.manifest).head(args.n or 60)
        if args.frame_pool is not None:
            spec = {**spec, "frame_pool": args.frame_pool}
        args.frame_pool = spec.get("frame_pool") or 1
        encoder = build_encoder(spec, device=args.device)
        report(args, name, encoder, manifest, tmp / "store")


def report(args: argparse.Namespace, name: str, encoder: Any, manifest: pd.DataFrame, store_dir: Path) -> None:
    """Time bare encode vs dump on ``manifest``, then print sizes, read rates and the RESULT line."""
    audio_s = float(manifest["duration"].sum())
    bare = time_bare(encoder, manifest, args.batch_seconds, args.device)
    start = time.perf_counter()
    dump(
        manifest, encoder, store_dir, device=args.device, batch_seconds=args.batch_seconds, num_workers=args.num_workers
    )
    finalize(store_dir, manifest["ID"].tolist())
    full = time.perf_counter() - start
    store = EmbeddingStore(store_dir)
    store_bytes = sum(p.stat().st_size for p in (store_dir / "shards").glob("*.bin"))
    npy_bytes = sum(store.frames(i) * store.num_layers * store.dim * 4 + 128 for i in store.ids())
    start = time.perf_counter()
    problems = store.verify()
    verify_s = time.perf_counter() - start
    fp16_rate, fp32_rate = read_rates(store)
    gb_per_hour = store_bytes / 1e9 / (audio_s / 3600)
    device = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(
        f"utterances {len(manifest)}, audio {audio_s:.1f} s, encoder {name} ({store.num_layers} x {store.dim} "
        f"at {store.frame_rate:g} Hz), device {device}, threads {torch.get_num_threads()}"
    )
    print(f"bare encoder.encode()   {bare:7.2f} s  (RTF {bare / audio_s:.4f})")
    print(f"whole dump()            {full:7.2f} s  (RTF {full / audio_s:.4f})")
    print(f"dump / bare             {full / bare:7.2f} x")
    print(
        f"store                   {store_bytes / 1e9:7.3f} GB = {gb_per_hour:.2f} GB per audio hour "
        f"({store_bytes / npy_bytes:.2f} x float32 .npy)"
    )
    print(
        f"verify (crc32 of all)   {verify_s:7.2f} s  ({store_bytes / 1e9 / max(verify_s, 1e-9):.2f} GB/s, "
        f"{len(problems)} problems)"
    )
    print(f"random reads            {fp16_rate:7.0f} utt/s float16 read(), {fp32_rate:.0f} utt/s float32 get()")
    print(
        f"RESULT dump_over_bare={full / bare:.3f} store_gb_per_audio_hour={gb_per_hour:.3f} bare_s={bare:.2f} "
        f"dump_s={full:.2f} audio_s={audio_s:.1f} utterances={len(manifest)} frame_pool={args.frame_pool} "
        f"device={args.device} encoder={name.replace(' ', '_')}"
    )


if __name__ == "__main__":
    main()
