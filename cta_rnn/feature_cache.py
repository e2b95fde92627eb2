"""Stage 2's read path: a fold's fp16 features held where the model runs, cut into padded batches there.

At a large encoder's scale (15 GB per audio hour) feeding the model decides the speed of training, so the
features of the utterances a fold uses (only the layers asked for) are held in one of three places, picked
automatically (``cache: auto``) and reported in the log:

- ``gpu``: one frame-major fp16 tensor (frames, layers, dim) on the GPU; crops and padding are one gather there;
- ``ram``: the same tensor in (pageable) host RAM, gathered in the main process into a pinned batch buffer when
  a GPU is used (so the batch's copy to the GPU is asynchronous; pinning the whole table would ask the CUDA host
  allocator for the next power of two of locked memory: 128 GiB for a 70-100 GB table);
- ``stream``: fp16 crops read from the store's memory maps in DataLoader workers (when nothing else fits).

fp16 travels everywhere (the model converts to float32 on its device). Batches are planned in the main
process from a generator seeded by (seed, epoch): every mode yields the same batches, crops included, and a
resumed run repeats the epoch it was killed in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cta_rnn import device as dev
from cta_rnn.store import EmbeddingStore

logger = logging.getLogger("cta_rnn.feature_cache")

Item = tuple[int, int, int]
"""(utterance row, first frame, frame count) of one batch element."""


@dataclass
class Batch:
    """A padded batch: fp16 features (B, T, L, D), relative lengths, labels and speaker rows of the normaliser."""

    ids: list[str]
    feats: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    speakers: torch.Tensor
    targets: torch.Tensor | None = None
    """(B, K) float32 dimension ratings (NaN: no rating); None without a dimensional task."""

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device`` (non-blocking copies from pinned memory)."""
        move = {"device": device, "non_blocking": True}
        return Batch(
            self.ids,
            self.feats.to(**move),
            self.lengths.to(**move),
            self.labels.to(**move),
            self.speakers.to(**move),
            None if self.targets is None else self.targets.to(**move),
        )

    def pin_memory(self) -> Batch:
        """Pinned copy (used by the DataLoader's pin_memory thread)."""
        return Batch(
            self.ids,
            self.feats.pin_memory(),
            self.lengths.pin_memory(),
            self.labels.pin_memory(),
            self.speakers.pin_memory(),
            None if self.targets is None else self.targets.pin_memory(),
        )


def cache_bytes(store: EmbeddingStore, ids: Sequence[str]) -> int:
    """fp16 bytes the selected layers of ``ids`` take."""
    return sum(store.frames(u) for u in ids) * store.num_layers * store.dim * 2


def choose_mode(mode: str, nbytes: int, device: torch.device, headroom: int = dev.BASE_HEADROOM) -> str:
    """The cache mode for ``nbytes`` of features on ``device`` (see :func:`cta_rnn.device.choose_cache_mode`)."""
    gpu_free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    return dev.choose_cache_mode(
        mode,
        nbytes,
        device.type,
        gpu_free=gpu_free,
        ram_available=available_ram(),
        headroom=headroom,
        processes=dev.processes_per_gpu(os.environ) if device.type == "cuda" else 1,
    )


def available_ram() -> int:
    """Bytes of RAM available to new allocations (MemAvailable on Linux, free pages elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _storage_uses(t: torch.Tensor) -> int:
    """How many tensors share ``t``'s storage (a buffer is free when only the pool holds it)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class HostBuffers:
    """Reusable host memory for batches, like CUDA's caching allocator for the CPU.

    A fresh 0.5-GB batch costs more in page faults than the copy into it (measured: 1.5 GB/s against
    7-10 GB/s into a reused buffer, see benchmarks/bench_train.py); a buffer is handed out again only once
    no tensor uses its memory any more, so a batch a caller keeps is never overwritten.
    """

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.pool: list[tuple[torch.Tensor, int]] = []

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape``, in a free pooled buffer when one is large enough.

        When none fits, a new buffer takes the place of the smallest free one, so a pool first filled by small
        batches (short evaluation utterances) grows to the largest batch instead of page-faulting on every one.
        """
        n = int(np.prod(shape))
        free = [k for k, (buf, idle) in enumerate(self.pool) if buf.dtype == dtype and _storage_uses(buf) == idle]
        for k in free:
            if self.pool[k][0].numel() >= n:
                return self.pool[k][0][:n].view(shape)
        buf = torch.empty(max(n, 1), dtype=dtype)
        if len(self.pool) < self.keep:
            self.pool.append((buf, _storage_uses(buf)))
        elif free:
            smallest = min(free, key=lambda k: self.pool[k][0].numel())
            self.pool[smallest] = (buf, _storage_uses(buf))
        return buf[:n].view(shape)


class FrameTable:
    """The fp16 frames of some utterances, frame-major (frames, layers, dim), in one tensor; row ``-1`` is zeros."""

    def __init__(self, store: EmbeddingStore, ids: Sequence[str], device: torch.device, pin: bool = False) -> None:
        """``pin``: batches gathered on the host go into pinned memory (for asynchronous copies to a GPU)."""
        counts = [store.frames(u) for u in ids]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(self.starts[-1])
        shape = (total + 1, store.num_layers, store.dim)
        self.data = torch.empty(shape, dtype=torch.float16, device=device)
        self.data[total].zero_()
        self.pad_row = total
        self.pin = pin and device.type == "cpu"
        self.buffers = HostBuffers() if device.type == "cpu" and not self.pin else None
        for i, uid in enumerate(ids):  # store rows are (layers, frames, dim): transpose while copying
            frames = torch.from_numpy(store.read(uid)).permute(1, 0, 2)
            self.data[self.starts[i] : self.starts[i + 1]].copy_(frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def gather(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (B, T, L, D) fp16 batch and valid frame counts, made by one indexing op where the data is."""
        counts = torch.tensor([n for _, _, n in items], dtype=torch.long)
        longest = int(counts.max())
        first = torch.tensor([int(self.starts[r]) + s for r, s, _ in items], dtype=torch.long)
        idx = first[:, None] + torch.arange(longest)[None]
        idx = torch.where(torch.arange(longest)[None] < counts[:, None], idx, torch.full_like(idx, self.pad_row))
        shape = (len(items), longest, *self.data.shape[1:])
        if self.data.device.type != "cpu":  # on the GPU: one gather there (CUDA's caching allocator)
            return self.data[idx.to(self.data.device)], counts
        if self.pin:  # CUDA's caching host allocator reuses the block only once its copy to the GPU is done
            out = torch.empty(shape, dtype=self.data.dtype, pin_memory=True)
        else:
            out = self.buffers.empty(shape, self.data.dtype)
        torch.index_select(self.data, 0, idx.flatten(), out=out.view(-1, *shape[2:]))
        return out, counts


class StoreReader:
    """Reads fp16 crops straight from the store's memory maps (used in DataLoader workers)."""

    def __init__(self, store: EmbeddingStore, ids: Sequence[str]) -> None:
        self.store, self.ids = store, list(ids)

    def gather(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (B, T, L, D) fp16 batch and valid frame counts."""
        counts = torch.tensor([n for _, _, n in items], dtype=torch.long)
        out = torch.zeros(len(items), int(counts.max()), self.store.num_layers, self.store.dim, dtype=torch.float16)
        for b, (row, start, n) in enumerate(items):
            crop = self.store.read(self.ids[row], start, start + n)  # (layers, n, dim)
            out[b, :n] = torch.from_numpy(crop).permute(1, 0, 2)
        return out, counts


def plan_epoch(
    frames: Sequence[int],
    batch_size: int,
    generator: torch.Generator,
    order: str = "random",
    crop: int | None = None,
    weights: Sequence[float] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[Item]]:
    """One epoch of training batches: the utterance order, crops and this rank's share, all from ``generator``.

    ``order``: random | ascending | descending (by frames) | balanced (sampling with replacement by ``weights``).
    """
    n = len(frames)
    if order == "balanced":
        rows = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n, True, generator=generator).tolist()
    elif order == "random":
        rows = torch.randperm(n, generator=generator).tolist()
    elif order in ("ascending", "descending"):
        rows = sorted(range(n), key=lambda i: frames[i], reverse=order == "descending")
    else:
        raise ValueError(f"unknown sorting {order!r}: use random, ascending, descending or balanced")
    items = []
    for r in rows:
        if crop and frames[r] > crop:
            start = int(torch.randint(0, frames[r] - crop + 1, (1,), generator=generator))
            items.append((r, start, crop))
        else:
            items.append((r, 0, frames[r]))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if world_size > 1:  # every rank gets the same number of batches
        batches = batches[: len(batches) // world_size * world_size][rank::world_size]
    return batches


def plan_eval(frames: Sequence[int], batch_size: int) -> list[list[Item]]:
    """Whole utterances in their listed order."""
    items = [(r, 0, n) for r, n in enumerate(frames)]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


class BatchDataset(Dataset):
    """Item k = planned batch k of the current epoch (see :func:`plan_epoch`)."""

    def __init__(
        self,
        source: FrameTable | StoreReader,
        ids: Sequence[str],
        labels: Sequence[int],
        speakers: Sequence[int],
        planner: Callable[[int], list[list[Item]]],
        targets: np.ndarray | None = None,
    ) -> None:
        self.source, self.ids, self.planner = source, list(ids), planner
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.speakers = torch.as_tensor(speakers, dtype=torch.long)
        self.targets = None
        if targets is not None and np.asarray(targets).shape[-1] > 0:
            self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        self.plans = planner(0)

    def set_epoch(self, epoch: int) -> None:
        """Plan the batches of ``epoch``."""
        self.plans = self.planner(epoch)

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, k: int) -> Batch:
        items = self.plans[k]
        feats, counts = self.source.gather(items)
        rows = torch.tensor([r for r, _, _ in items], dtype=torch.long)
        return Batch(
            [self.ids[r] for r in rows.tolist()],
            feats,
            counts.float() / feats.shape[1],
            self.labels[rows],
            self.speakers[rows],
            None if self.targets is None else self.targets[rows],
        )


@dataclass
class SplitData:
    """What a split's loader needs: utterance IDs, label indices, speaker rows, dimension ratings (N, K)."""

    ids: list[str]
    labels: list[int]
    speakers: list[int]
    targets: np.ndarray | None = None


class FeatureSource:
    """The features of a fold in the chosen cache mode; makes the train and eval loaders."""

    def __init__(
        self,
        store: EmbeddingStore,
        ids: Sequence[str],
        device: torch.device | str,
        mode: str = "auto",
        num_workers: int = 0,
        batch_size: int = 32,
    ) -> None:
        """``batch_size``: the largest batch the model sees (its activations are left free on the GPU)."""
        self.store, self.device = store, torch.device(device)
        self.ids = list(dict.fromkeys(ids))
        nbytes = cache_bytes(store, self.ids)
        longest = max((store.frames(u) for u in self.ids), default=0)
        headroom = dev.gpu_headroom(dev.activation_bytes(batch_size, longest, store.num_layers, store.dim))
        self.mode = choose_mode(mode, nbytes, self.device, headroom)
        self.num_workers = num_workers if self.mode == "stream" else 0
        self.table = None
        if self.mode != "stream":
            where = self.device if self.mode == "gpu" else torch.device("cpu")
            self.table = FrameTable(store, self.ids, where, pin=self.device.type == "cuda")
        logger.info(
            "feature cache: %s (%.2f GB fp16, %d utterances, layers %s)",
            self.mode,
            nbytes / 1e9,
            len(self.ids),
            store.layers,
        )
        self.row = {u: i for i, u in enumerate(self.ids)}

    def utterance(self, uid: str) -> torch.Tensor:
        """(frames, layers, dim) fp16 of one utterance, where the cache is (the store for streaming)."""
        if self.table is not None:
            r = self.row[uid]
            return self.table.data[self.table.starts[r] : self.table.starts[r + 1]]
        return torch.from_numpy(self.store.read(uid)).permute(1, 0, 2)

    def loader(self, split: SplitData, planner: Callable[[int], list[list[Item]]]) -> DataLoader:
        """A DataLoader of planned :class:`Batch` es over ``split`` (items are whole batches)."""
        if self.table is not None:  # the table is indexed by fold row: plan in split rows, map to table rows
            source = _RowMapped(self.table, [self.row[u] for u in split.ids])
        else:
            source = StoreReader(self.store, split.ids)
        ds = BatchDataset(source, split.ids, split.labels, split.speakers, planner, split.targets)
        return DataLoader(
            ds,
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.mode == "stream" and self.device.type == "cuda",
            persistent_workers=False,
        )

    def frames(self, ids: Sequence[str]) -> list[int]:
        """Valid frames of each utterance."""
        return [self.store.frames(u) for u in ids]

    def release(self) -> None:
        """Free the cache now (and hand a GPU table's memory back to the device for the next fold's cache)."""
        on_gpu = self.table is not None and self.table.data.device.type == "cuda"
        self.table = None
        if on_gpu:
            torch.cuda.empty_cache()


class _RowMapped:
    """A FrameTable seen through a split's own row numbers."""

    def __init__(self, table: FrameTable, rows: Sequence[int]) -> None:
        self.table, self.rows = table, list(rows)

    def gather(self, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table.gather([(self.rows[r], s, n) for r, s, n in items])
