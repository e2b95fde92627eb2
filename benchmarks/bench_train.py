"""Stage 2's speed: the training read path against the model's own step and against a plain memory copy.

    python benchmarks/bench_train.py --store recipes/mini/dump/whisper_tiny_en [--fold_dir DIR] [--device cuda]
        [--encoder recipes/shared/hparams/encoder/whisper_tiny_en.yaml --manifest recipes/mini/data/manifest.csv]
    python benchmarks/bench_train.py --shape large-v3 [--n 96] [--device cuda]
    python benchmarks/bench_train.py --run_fold [--threads 1] -- <cta_rnn.train arguments of one fold>

``--store``: one training epoch through the real stage-2 data path (feature cache -> planned batches ->
CTA-RNN forward + backward + Adam step) against the same steps on the same batches already on the device:
``epoch_over_step``. With ``--encoder``/``--manifest`` it also times recomputing the encoder over the
training utterances (what an s3prl-style recipe pays every epoch): ``encoder_over_epoch``.

``--shape``: a synthetic store of that encoder's shape in a temp folder (IEMOCAP-like lengths); the data
path as training uses it (batches of 32 crops of 4 s, up to the tensor the model gets on its device) in
every cache mode against a plain copy of the same fp16 bytes: ``read_over_memcpy`` = memcpy time / read
time (1.0 = as fast as memcpy); the old float32 ``EmbeddingStore.get`` path is timed as the baseline. For
ram mode the host gather alone (``gather_over_memcpy``: what a GPU run waits for when the store does not fit
on the GPU) and a bare fp16 ``index_select`` of the same rows are timed too. The memcpy baseline copies the
same bytes in batch-sized pieces between two warmed buffers with the same thread count (``--threads``).
``--run_fold``: one whole fold of the real stage 2 (process start to test results) against the time spent in its
training steps: ``run_over_steps`` (1.0 = nothing but steps), with imports, data/cache, evaluation and checkpoint
saves broken down (from the ``timing`` that training records in ``test_results.json``).
Every run ends with one ``RESULT key=value ...`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cta_rnn.data import make_loaders  # noqa: E402
from cta_rnn.feature_cache import FeatureSource  # noqa: E402
from cta_rnn.models import CTARNN  # noqa: E402
from cta_rnn.normalization import FeatureNormalizer  # noqa: E402
from cta_rnn.store import EmbeddingStore, StoreWriter, finalize, manifest_checksum  # noqa: E402

SHAPES = {"large-v3": (33, 1280, 50.0), "tiny": (5, 384, 50.0)}
LABELS = ["neu", "hap", "ang", "sad"]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_store(root: Path, shape: str, n: int, seed: int = 0) -> Path:
    """A finished store of ``n`` utterances of ``shape`` (random fp16), lengths like IEMOCAP (mean ~4.5 s)."""
    layers, dim, rate = SHAPES[shape]
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.gamma(2.0, 2.2, n), 1.0, 20.0)
    ids = [f"utt{i:05d}" for i in range(n)]
    meta = {
        "encoder": {"backend": "synthetic", "name": shape},
        "layers": list(range(layers)),
        "dim": dim,
        "frame_rate": rate,
        "manifest_checksum": manifest_checksum(ids, durations),
    }
    with StoreWriter(root, meta) as w:
        for uid, d in zip(ids, durations):
            w.add(uid, rng.standard_normal((layers, int(d * rate), dim), dtype=np.float32).astype(np.float16))
    finalize(root, ids)
    return root


def toy_splits(ids: list[str], seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every utterance in training (random labels, 4 speakers); small valid/test splits."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"ID": ids, "emotion": rng.choice(LABELS, len(ids)), "speaker": [f"s{i % 4}" for i in range(len(ids))]}
    )
    return {"train": df, "valid": df.iloc[:8], "test": df.iloc[:8]}


def time_read(loader, device: torch.device, epochs: int = 2) -> tuple[float, int]:
    """Seconds per epoch and fp16 bytes per epoch of the data path up to the batch on ``device``."""
    loader.dataset.set_epoch(0)
    for b in loader:  # warm-up (page cache, allocator)
        b.to(device)
    total, nbytes = 0.0, 0
    for e in range(1, epochs + 1):
        loader.dataset.set_epoch(e)
        sync(device)
        start = time.perf_counter()
        for b in loader:
            x = b.to(device).feats
            nbytes += x.numel() * 2
        sync(device)
        total += time.perf_counter() - start
    return total / epochs, nbytes // epochs


def time_memcpy(nbytes: int, batch_bytes: int, device: torch.device, repeats: int = 5) -> float:
    """Seconds to copy ``nbytes`` of fp16 host memory to ``device`` in batch-sized pieces (plain copies).

    Both buffers are allocated and touched before timing (no page faults) and the copy runs with the thread
    count the read path has (``torch.set_num_threads``); the best of ``repeats`` passes is kept.
    """
    src = torch.ones(batch_bytes // 2, dtype=torch.float16, pin_memory=device.type == "cuda")
    dst = torch.ones(batch_bytes // 2, dtype=torch.float16, device=device)
    reps = max(1, round(nbytes / batch_bytes))
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms caches and threads
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            dst.copy_(src, non_blocking=True)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def time_gathers(source: FeatureSource, loader, repeats: int = 3) -> tuple[float, float]:
    """Seconds per epoch of ram mode's host gather (``FrameTable.gather`` of the planned crops) and of a bare
    fp16 ``index_select`` of the same rows into one warmed buffer (its floor: the same bytes, no bookkeeping)."""
    table = source.table
    rows = [source.row[u] for u in loader.dataset.ids]
    plans = [[(rows[r], s, n) for r, s, n in items] for items in loader.dataset.plans]
    indices = []
    for items in plans:
        longest = max(n for _, _, n in items)
        idx = torch.full((len(items), longest), table.pad_row, dtype=torch.long)
        for b, (r, s, n) in enumerate(items):
            idx[b, :n] = torch.arange(int(table.starts[r]) + s, int(table.starts[r]) + s + n)
        indices.append(idx.flatten())
    out = torch.empty(max(len(i) for i in indices), *table.data.shape[1:], dtype=table.data.dtype)
    out.fill_(0)
    best_gather, best_bare = float("inf"), float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for items in plans:
            table.gather(items)
        best_gather = min(best_gather, time.perf_counter() - start)
        start = time.perf_counter()
        for idx in indices:
            torch.index_select(table.data, 0, idx, out=out[: len(idx)])
        best_bare = min(best_bare, time.perf_counter() - start)
    return best_gather, best_bare


def time_get_fp32(store: EmbeddingStore, loader) -> float:
    """The old path: float32 ``EmbeddingStore.get`` of the same crops, padded into a float32 batch."""
    start = time.perf_counter()
    ids = loader.dataset.ids
    for items in loader.dataset.plans:
        xs = [store.get(ids[r], s, s + n) for r, s, n in items]
        out = torch.zeros(len(xs), max(x.shape[1] for x in xs), store.num_layers, store.dim)
        for i, x in enumerate(xs):
            out[i, : x.shape[1]] = x.transpose(0, 1)
    return time.perf_counter() - start


def bench_shape(args: argparse.Namespace) -> None:
    """read_over_memcpy for a synthetic store of a real encoder's shape."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        store = EmbeddingStore(synthetic_store(Path(tmp) / "store", args.shape, args.n))
        gb = sum(store.frames(u) for u in store.ids()) * store.num_layers * store.dim * 2 / 1e9
        print(
            f"synthetic {args.shape} store: {len(store)} utterances, {gb:.2f} GB fp16 "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        splits = toy_splits(store.ids())
        norm = FeatureNormalizer(store.num_layers, store.dim, "none")
        crop = int(4.0 * store.frame_rate)
        results = {}
        modes = ["ram", "stream"] + (["gpu"] if device.type == "cuda" else [])
        for mode in modes:
            t0 = time.perf_counter()
            source = FeatureSource(store, store.ids(), device, mode, num_workers=args.workers)
            load_s = time.perf_counter() - t0
            loader = make_loaders(source, splits, LABELS, norm, batch_size=32, eval_batch_size=32, seed=0, crop=crop)[
                "train"
            ]
            read_s, nbytes = time_read(loader, device)
            batch_bytes = 32 * crop * store.num_layers * store.dim * 2
            copy_s = time_memcpy(nbytes, batch_bytes, device)
            results[mode] = copy_s / read_s
            print(
                f"{mode:6s}: load {load_s:.2f} s, epoch read {read_s:.3f} s for {nbytes / 1e9:.2f} GB "
                f"({nbytes / 1e9 / read_s:.2f} GB/s); memcpy {copy_s:.3f} s ({nbytes / 1e9 / copy_s:.2f} GB/s); "
                f"read_over_memcpy {copy_s / read_s:.2f}"
            )
            if mode == "ram":
                gather_s, bare_s = time_gathers(source, loader)
                results["gather_over_memcpy"] = copy_s / gather_s
                results["bare_index_select_over_memcpy"] = copy_s / bare_s
                print(
                    f"ram host gather alone {gather_s:.3f} s ({nbytes / 1e9 / gather_s:.2f} GB/s), bare fp16 "
                    f"index_select of the same rows {bare_s:.3f} s ({nbytes / 1e9 / bare_s:.2f} GB/s), memcpy "
                    f"{nbytes / 1e9 / copy_s:.2f} GB/s on {torch.get_num_threads()} thread(s): "
                    f"gather_over_memcpy {copy_s / gather_s:.2f}, bare_over_memcpy {copy_s / bare_s:.2f}"
                )
                old_s = time_get_fp32(store, loader)
                results["old_fp32_get"] = copy_s / old_s
                print(f"old float32 EmbeddingStore.get path: {old_s:.3f} s, read_over_memcpy {copy_s / old_s:.3f}")
            del source, loader
    auto = "gpu" if device.type == "cuda" else "ram"
    extra = " ".join(f"{k}={v:.3f}" for k, v in results.items())
    print(f"RESULT read_over_memcpy={results[auto]:.3f} mode={auto} shape={args.shape} device={device} {extra}")


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch, device: torch.device) -> None:
    """CTA-RNN forward + backward + Adam step on one batch."""
    b = batch.to(device)
    logits = model(b.feats.permute(0, 2, 1, 3), b.lengths, b.speakers)
    loss = torch.nn.functional.cross_entropy(logits, b.labels)
    opt.zero_grad()
    loss.backward()
    opt.step()


def timed_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, batches, device: torch.device) -> float:
    """Seconds for one training step on every batch of an iterable (a loader or batches in memory)."""
    sync(device)
    start = time.perf_counter()
    for b in batches:
        train_step(model, opt, b, device)
    sync(device)
    return time.perf_counter() - start


def step_seconds(model: torch.nn.Module, opt: torch.optim.Optimizer, loader, device: torch.device) -> float:
    """Seconds of the model steps alone over an epoch: each batch is moved to the device before its step is
    timed (one batch on the device at a time, never a whole epoch beside the cache)."""
    total = 0.0
    for b in loader:
        on_device = b.to(device)
        sync(device)
        start = time.perf_counter()
        train_step(model, opt, on_device, device)
        sync(device)
        total += time.perf_counter() - start
    return total


def bench_store(args: argparse.Namespace) -> None:
    """epoch_over_step (and encoder_over_epoch) on a real store."""
    from cta_rnn.artifacts import read_splits

    device = torch.device(args.device)
    store = EmbeddingStore(args.store)
    splits = read_splits(args.fold_dir) if args.fold_dir else toy_splits(store.ids())
    ids = [u for df in splits.values() for u in df["ID"]]
    t0 = time.perf_counter()
    source = FeatureSource(store, ids, device, args.cache, num_workers=args.workers)
    load_s = time.perf_counter() - t0
    model = CTARNN(store.num_layers, store.dim, 4, normalization="none", input_proj=128, temporal_pool=2).to(device)
    norm = model.normalizer
    crop = int(args.crop_seconds * store.frame_rate)
    loader = make_loaders(source, splits, LABELS, norm, batch_size=32, eval_batch_size=32, seed=0, crop=crop)["train"]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader.dataset.set_epoch(0)
    for b in loader:  # warm-up
        train_step(model, opt, b, device)
    loader.dataset.set_epoch(1)
    epoch_s = timed_steps(model, opt, loader, device)
    step_s = step_seconds(model, opt, loader, device)  # the same epoch's batches, each already on the device
    print(
        f"cache {source.mode} (load {load_s:.2f} s): epoch {epoch_s:.3f} s, model steps alone {step_s:.3f} s, "
        f"{len(loader)} batches of {len(splits['train'])} utterances"
    )
    line = f"RESULT epoch_over_step={epoch_s / step_s:.3f} epoch_s={epoch_s:.3f} step_s={step_s:.3f} mode={source.mode}"
    if args.encoder and args.manifest:
        enc_s = time_encoder(args, splits["train"]["ID"].tolist(), device)
        print(f"recomputing the encoder over the training utterances (s3prl-style, every epoch): {enc_s:.2f} s")
        line += f" encoder_over_epoch={enc_s / epoch_s:.2f}"
    print(line)


def time_encoder(args: argparse.Namespace, ids: list[str], device: torch.device) -> float:
    """Seconds to encode the training utterances once (batches of up to 60 s of padded audio)."""
    from cta_rnn.artifacts import read_manifest
    from cta_rnn.audio import load_audio
    from cta_rnn.dump import collate, duration_batches
    from cta_rnn.encoders import build_encoder, load_spec

    enc = build_encoder(load_spec(args.encoder), device=str(device))
    m = read_manifest(args.manifest).set_index("ID").loc[ids]
    wavs = [load_audio(w, enc.sample_rate) for w in m["wav"]]
    batches = duration_batches(m["duration"].astype(float).tolist(), 60.0)
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for idx in batches:
            b = collate([(ids[i], wavs[i], "") for i in idx])
            enc.encode(b["wavs"].to(device), b["lengths"].to(device))
    sync(device)
    return time.perf_counter() - start


def bench_run_fold(args: argparse.Namespace, train_args: list[str]) -> None:
    """A whole fold of ``python -m cta_rnn.train`` (the real stage 2) against its training steps alone:
    ``run_over_steps`` = process wall time / time in SpeechBrain's ``fit_batch``, with the rest broken down."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(Path(__file__).parents[1])}
        start = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "cta_rnn.train", *train_args, f"--output_folder={tmp}/fold"],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if p.returncode != 0:
            raise SystemExit(f"training failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        res = json.loads((Path(tmp) / "fold" / "test_results.json").read_text())
    t = res["timing"]
    steps, evals, ckpt = t["train_steps_s"], t["eval_batches_s"], t["checkpoints_s"]
    other = t["fit_and_test_s"] - steps - evals - ckpt
    print(
        f"whole fold {wall:.1f} s ({res['epochs_run']} epochs): process start + imports {wall - t['fold_s']:.1f} s, "
        f"data + cache + normaliser {t['fold_s'] - t['fit_and_test_s']:.1f} s, training steps {steps:.1f} s, "
        f"validation/test batches {evals:.1f} s, checkpoints {ckpt:.1f} s, other epoch work {other:.1f} s"
    )
    print(
        f"RESULT run_over_steps={wall / steps:.3f} fold_s={wall:.1f} steps_s={steps:.1f} eval_s={evals:.1f} "
        f"checkpoints_s={ckpt:.1f} startup_s={wall - t['fold_s']:.1f} epochs={res['epochs_run']}"
    )


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="a finished embedding store")
    p.add_argument("--fold_dir", default=None, help="a fold's CSVs (default: every store utterance in training)")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="synthetic store of this encoder's shape")
    p.add_argument("--n", type=int, default=96, help="utterances of the synthetic store")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache", default="auto")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the stream mode")
    p.add_argument("--crop_seconds", type=float, default=2.0)
    p.add_argument("--encoder", default=None, help="encoder YAML, for the recompute-every-epoch comparison")
    p.add_argument("--manifest", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tmp", default=None, help="folder for the synthetic store (default: the system temp)")
    p.add_argument(
        "--run_fold", action="store_true", help="time a whole fold: the cta_rnn.train arguments follow after --"
    )
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    torch.set_num_threads(args.threads)
    if args.run_fold:
        bench_run_fold(args, train_args)
    elif args.shape:
        bench_shape(args)
    elif args.store:
        bench_store(args)
    else:
        p.error("give --store DIR or --shape SHAPE")


if __name__ == "__main__":
    main()
