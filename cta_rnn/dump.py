"""Stage 1: dump the layer-wise hidden states of a frozen encoder for every utterance of a manifest.

    python -m cta_rnn.dump --manifest data/manifest.csv --encoder hparams/encoder/whisper_tiny_en.yaml \
        --out dump/whisper_tiny_en [--device cuda] [--shard 0 --num_shards 4] [--on_error skip] [key=value ...]

Resumable (finished utterances are never recomputed), idempotent (a finished store whose index matches its
shards is skipped unless ``--force``), refuses a store made with another identity (encoder, layers, input,
dtype, frame_pool, --max_duration, manifest) naming the differing keys, and a second writer of the same rank.
``key=value`` pairs override the encoder YAML (e.g. ``layers=0-4 input=trimmed frame_pool=2``).
The encoder runs in the main thread; writes, crc32 and journal in a writer thread (see docs/store.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from cta_rnn import device as device_mod
from cta_rnn import encoders, progress
from cta_rnn.artifacts import read_manifest
from cta_rnn.audio import AudioError, load_audio
from cta_rnn.encoders.base import LayerwiseEncoder
from cta_rnn.encoders.factory import load_spec
from cta_rnn.store import (
    StoreError,
    StoreLockedError,
    StoreWriteError,
    StoreWriter,
    check_finished,
    finalize,
    held_locks,
    is_complete,
    manifest_checksum,
    skipped_ids,
    write_skipped,
)

logger = logging.getLogger("cta_rnn.dump")


class AudioDataset(Dataset):
    """Loads (id, waveform or error message) for a list of manifest rows; runs in DataLoader workers."""

    def __init__(self, rows: pd.DataFrame, sample_rate: int, max_duration: float | None = None) -> None:
        self.ids, self.paths = rows["ID"].tolist(), rows["wav"].tolist()
        self.sample_rate, self.max_duration = sample_rate, max_duration

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None, str]:
        try:
            wav = load_audio(self.paths[i], self.sample_rate)
        except AudioError as err:
            return self.ids[i], None, str(err)
        if self.max_duration:
            wav = wav[: int(self.max_duration * self.sample_rate)]
        return self.ids[i], wav, ""


def collate(items: list[tuple[str, torch.Tensor | None, str]]) -> dict[str, Any]:
    """Pad the good waveforms into (B, S) with relative lengths; pass errors through."""
    good = [(uid, w) for uid, w, _ in items if w is not None]
    errors = [(uid, err) for uid, w, err in items if w is None]
    if not good:
        return {"ids": [], "wavs": None, "lengths": None, "errors": errors, "samples": []}
    samples = [w.numel() for _, w in good]
    longest = max(samples)
    wavs = torch.zeros(len(good), longest)
    for i, (_, w) in enumerate(good):
        wavs[i, : w.numel()] = w
    lengths = torch.tensor([n / longest for n in samples])
    return {"ids": [u for u, _ in good], "wavs": wavs, "lengths": lengths, "errors": errors, "samples": samples}


def duration_batches(durations: Sequence[float], batch_seconds: float, max_batch: int = 64) -> list[list[int]]:
    """Group indices sorted by decreasing duration so that padded batch audio stays under ``batch_seconds``."""
    order = sorted(range(len(durations)), key=lambda i: -durations[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = durations[cur[0]] if cur else durations[i]
        if cur and (longest * (len(cur) + 1) > batch_seconds or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def load_encoder_spec(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The encoder's name (the YAML file stem) and its validated spec (``encoders.factory.load_spec``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder YAML not found")
    return path.stem, load_spec(path, overrides)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict, values parsed as YAML scalars/lists."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"override {pair!r} is not key=value")
        out[key.lstrip("-")] = yaml.safe_load(value)
    return out


def store_meta(encoder: LayerwiseEncoder, checksum: str, max_duration: float | None = None) -> dict[str, Any]:
    """The identity a store is checked against: everything that changes the stored values."""
    return {
        "encoder": {**encoder.describe(), "name": getattr(encoder, "spec_name", None)},
        "layers": list(encoder.layers),
        "dim": int(encoder.dim),
        "frame_rate": float(encoder.frame_rate),
        "max_duration": float(max_duration) if max_duration else None,
        "manifest_checksum": checksum,
    }


def iterate_batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """Iterate a loader (a seam for tests)."""
    yield from loader


@dataclass
class StagedBatch:
    """One encoded batch on its way to the disk: float16 host arrays, finiteness flags, copy-done event."""

    ids: list[str]
    arrays: list[torch.Tensor]
    finite: torch.Tensor
    ready: torch.cuda.Event | None = None


def stage_batch(hidden: torch.Tensor, frames: Sequence[int], ids: list[str]) -> StagedBatch:
    """Cast each utterance's valid frames to float16 and check them on the device, then start the copies to
    (pinned) host memory without waiting for them; the writer thread waits on ``ready``."""
    states = [hidden[i, :, :n].to(torch.float16).contiguous() for i, n in enumerate(frames)]
    finite = torch.stack([torch.isfinite(h).all() for h in states])
    if hidden.device.type != "cuda":
        return StagedBatch(ids, states, finite)
    flat = torch.empty(sum(h.numel() for h in states), dtype=torch.float16, pin_memory=True)
    arrays, pos = [], 0
    for h in states:
        arrays.append(flat[pos : pos + h.numel()].view(h.shape).copy_(h, non_blocking=True))
        pos += h.numel()
    flags = torch.empty(finite.shape, dtype=torch.bool, pin_memory=True).copy_(finite, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(hidden.device))  # the stream that issued the copies, not device 0's
    return StagedBatch(ids, arrays, flags, ready)


class WriterThread:
    """Writes staged batches (data, crc32, journal) into a StoreWriter from a background thread.

    The queue is bounded (``maxsize`` batches), so host memory stays bounded and the encoder only waits when
    the disk is slower than the encoder. The first error in the thread is re-raised in the main thread by the
    next :meth:`put` or when the context is left (StoreWriter errors name the store and the utterance); later
    batches are dropped. Used as a context manager: on leaving, the batches already queued are written.
    """

    def __init__(self, writer: StoreWriter, maxsize: int = 4) -> None:
        self.writer = writer
        self.queue: queue.Queue[StagedBatch | None] = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"store-writer-{writer.root.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(item)
                except BaseException as err:  # handed to the main thread
                    self.error = err

    def _write(self, item: StagedBatch) -> None:
        if item.ready is not None:
            item.ready.synchronize()
        for uid, arr, ok in zip(item.ids, item.arrays, item.finite.tolist(), strict=True):
            self.writer.add(uid, arr.numpy(), finite=ok)

    def raise_error(self) -> None:
        """Re-raise the writer thread's error, if any."""
        if self.error is not None:
            raise self.error

    def put(self, item: StagedBatch) -> None:
        """Queue a batch (blocks while the queue is full); raises the thread's error if it failed."""
        self.raise_error()
        self.queue.put(item)

    def __enter__(self) -> WriterThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if exc_type is None:
            self.raise_error()


def encode_batch(encoder: LayerwiseEncoder, batch: dict[str, Any], device: str) -> tuple[torch.Tensor, list[int]]:
    """Run the encoder on one collated batch: (B, layers, T, D) states on the device and valid frame counts."""
    wavs = batch["wavs"].to(device, non_blocking=True)
    hidden, frames = encoder.encode(wavs, batch["lengths"])
    return hidden, [int(n) for n in frames.tolist()]


def encode_finite(
    encoder: LayerwiseEncoder, batch: dict[str, Any], device: str
) -> tuple[torch.Tensor, list[int], bool]:
    """:func:`encode_batch`, re-run in float32 when reduced-precision compute gave non-finite states.

    float16 autocast (the CUDA default, see :func:`cta_rnn.device.auto_dtype`) can overflow inside a large
    encoder on an utterance the float32 path encodes; such a batch is encoded again in float32 instead of
    stopping the dump. Returns the states, frame counts and whether the retry was needed.
    """
    hidden, frames = encode_batch(encoder, batch, device)
    reduced = getattr(encoder, "dtype_name", "float32") not in ("float32", "fp32")
    if not reduced or bool(torch.isfinite(hidden).all()):
        return hidden, frames, False
    saved = encoder.dtype_name
    encoder.dtype_name = "float32"
    try:
        hidden, frames = encode_batch(encoder, batch, device)
    finally:
        encoder.dtype_name = saved
    return hidden, frames, True


def make_loader(
    todo: pd.DataFrame,
    encoder: LayerwiseEncoder,
    batch_seconds: float,
    num_workers: int,
    device: str,
    max_duration: float | None,
) -> DataLoader:
    """Audio loading in worker processes, batched by duration (longest first)."""
    dataset = AudioDataset(todo, encoder.sample_rate, max_duration)
    durs = [min(d, max_duration) if max_duration else d for d in todo["duration"].astype(float)]
    return DataLoader(
        dataset,
        batch_sampler=duration_batches(durs, batch_seconds),
        collate_fn=collate,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        pin_memory=torch.device(device).type == "cuda",
    )


def dump(
    manifest: pd.DataFrame,
    encoder: LayerwiseEncoder,
    out_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    batch_seconds: float = 60.0,
    num_workers: int = 1,
    shard: int = 0,
    num_shards: int = 1,
    on_error: str = "fail",
    max_duration: float | None = None,
    shard_bytes: int = 2**30,
    queue_batches: int = 4,
) -> dict[str, Any]:
    """Encode the manifest rows of this shard into the store at ``out_dir``; returns a summary dict.

    The encoder runs in this thread; float16 conversion and finiteness checks run on its device, and the
    writes, checksums and journal in a :class:`WriterThread` behind a queue of ``queue_batches`` batches.
    """
    out_dir = Path(out_dir)
    if manifest.empty:
        raise ValueError(f"{out_dir}: the manifest has no utterances: nothing to dump")
    checksum = manifest_checksum(manifest["ID"], manifest["duration"])
    meta = store_meta(encoder, checksum, max_duration)
    order = manifest.sort_values("duration", ascending=False, kind="stable")
    mine = order.iloc[shard::num_shards]
    summary = {"utterances": len(mine), "encoded": 0, "skipped": 0, "audio_s": 0.0, "wall_s": 0.0}
    skipped: list[dict[str, str]] = []
    with StoreWriter(out_dir, meta, rank=shard, shard_bytes=shard_bytes) as writer:
        todo = mine[~mine["ID"].isin(writer.done.keys())].reset_index(drop=True)
        summary["already_done"] = len(mine) - len(todo)
        if len(todo):
            logger.info("encoding %d utterances (%d already in the store)", len(todo), summary["already_done"])
        loader = make_loader(todo, encoder, batch_seconds, num_workers, device, max_duration)
        start = time.perf_counter()
        bar = progress.bar(len(todo), f"dump {out_dir.name}", unit="utt")
        with WriterThread(writer, queue_batches) as sink:
            for batch in iterate_batches(loader):
                skipped += audio_errors(batch, on_error)
                if batch["ids"]:
                    hidden, frames, retried = encode_finite(encoder, batch, device)
                    if retried:
                        summary["float32_retries"] = summary.get("float32_retries", 0) + len(batch["ids"])
                        logger.warning(
                            "non-finite %s states: re-encoded in float32: %s", encoder.dtype_name, batch["ids"]
                        )
                    sink.put(stage_batch(hidden, frames, batch["ids"]))
                    summary["encoded"] += len(batch["ids"])
                    summary["audio_s"] += sum(batch["samples"]) / encoder.sample_rate
                bar.update(len(batch["ids"]) + len(batch["errors"]))
                rtf = (time.perf_counter() - start) / max(summary["audio_s"], 1e-9)
                bar.set_postfix(rtf=f"{rtf:.3f}", refresh=False)
        bar.close()
        summary["wall_s"] = time.perf_counter() - start
    summary["skipped"] = len(skipped)
    if skipped:
        write_skipped(out_dir / f"skipped_r{shard}.csv", skipped)
    (out_dir / f"rank{shard}.done").write_text(f"{num_shards}\n")
    return summary


def audio_errors(batch: dict[str, Any], on_error: str) -> list[dict[str, str]]:
    """The batch's unreadable files: raise on the first (``fail``) or return them to list (``skip``)."""
    skipped = []
    for uid, err in batch["errors"]:
        if on_error != "skip":
            raise AudioError(uid, err)
        logger.warning("skipping %s", err)
        skipped.append({"ID": uid, "reason": err})
    return skipped


def maybe_finalize(manifest: pd.DataFrame, out_dir: str | os.PathLike, num_shards: int) -> bool:
    """Merge the index when every rank has finished; returns whether the store is complete."""
    out_dir = Path(out_dir)
    if not all((out_dir / f"rank{r}.done").exists() for r in range(num_shards)):
        return False
    n = finalize(out_dir, manifest["ID"].tolist(), skipped_ids(out_dir))
    logger.info("store complete: %d utterances in %s", n, out_dir)
    return True


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True, help="manifest CSV (ID, wav, duration, ...)")
    p.add_argument("--encoder", required=True, help="encoder YAML (hparams/encoder/<name>.yaml)")
    p.add_argument("--out", required=True, help="store folder, e.g. dump/<encoder name>")
    p.add_argument(
        "--device", default="auto", help="auto | cpu | cuda (cuda:LOCAL_RANK under torchrun) | cuda:N (default: auto)"
    )
    p.add_argument("--batch_seconds", type=float, default=60.0, help="padded audio seconds per batch")
    p.add_argument("--num_workers", type=int, default=1, help="audio loading workers")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--shard", type=int, default=None, help="this writer's shard (default: torchrun RANK or 0)")
    p.add_argument("--num_shards", type=int, default=None, help="number of writers (default: WORLD_SIZE or 1)")
    p.add_argument("--on_error", choices=("fail", "skip"), default="fail", help="bad audio: stop, or skip and list")
    p.add_argument("--max_duration", type=float, default=None, help="crop utterances to this many seconds")
    p.add_argument("--force", action="store_true", help="delete an existing store and dump again")
    p.add_argument("--merge", action="store_true", help="only merge the ranks' journals into the index")
    p.add_argument("overrides", nargs="*", help="encoder YAML overrides key=value")
    return p


def remove_store(out: Path) -> None:
    """Delete a store's files (``--force``), refusing while a live process writes any rank of it."""
    holders = held_locks(out)
    if holders:
        who = ", ".join(f"rank {rank} by pid {pid}" for rank, pid in holders)
        raise StoreLockedError(f"{out}: not deleted: the store is being written ({who}); stop that dump first")
    for child in ("shards", "index.csv", "DONE", "meta.json"):
        path = out / child
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for pattern in ("journal_r*.jsonl", "rank*.done", "skipped_r*.csv"):
        for path in out.glob(pattern):
            path.unlink()


def setup_logging(out: Path) -> None:
    """Log to stderr and to ``<out>/log.txt``."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "log.txt")],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.dump`` / ``cta-rnn dump``; store problems end in one line."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out)
    try:
        return run(args, out)
    except (StoreError, StoreWriteError) as err:
        logger.error("%s", err)
        raise SystemExit(f"cta-rnn dump: {err}") from None


def run(args: argparse.Namespace, out: Path) -> int:
    """The dump command after argument parsing."""
    try:
        shard, num_shards = device_mod.dump_shard(args.shard, args.num_shards, os.environ)
        device = device_mod.resolve_device(args.device, device_mod.facts())
    except device_mod.DeviceError as err:
        raise SystemExit(f"cta-rnn dump: {err}") from None
    args.device = str(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # this writer's GPU is the current one (streams, events, autocast)
    try:
        manifest = read_manifest(args.manifest)
    except pd.errors.EmptyDataError:
        manifest = pd.DataFrame()
    if manifest.empty:
        raise SystemExit(f"cta-rnn dump: {args.manifest}: the manifest has no utterances: nothing to dump")
    if args.merge:
        return 0 if maybe_finalize(manifest, out, num_shards) else 1
    if args.force and shard == 0:
        remove_store(out)
    if args.threads:
        torch.set_num_threads(args.threads)

    name, spec = load_encoder_spec(args.encoder, parse_overrides(args.overrides))
    encoder = encoders.build_encoder(spec, device=args.device)
    encoder.spec_name = name
    if is_complete(out) and not args.force:
        meta = store_meta(encoder, manifest_checksum(manifest["ID"], manifest["duration"]), args.max_duration)
        store = check_finished(out, meta)
        logger.info(
            "%s is complete (%d utterances, index matches its shards): skipping (--force redoes it)", out, len(store)
        )
        return 0
    (out / f"rank{shard}.done").unlink(missing_ok=True)
    summary = dump(
        manifest,
        encoder,
        out,
        device=args.device,
        batch_seconds=args.batch_seconds,
        num_workers=args.num_workers,
        shard=shard,
        num_shards=num_shards,
        on_error=args.on_error,
        max_duration=args.max_duration,
    )
    logger.info("shard %d/%d: %s", shard, num_shards, summary)
    maybe_finalize(manifest, out, num_shards)
    return 0


if __name__ == "__main__":
    sys.exit(main())
