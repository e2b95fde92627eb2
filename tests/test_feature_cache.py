"""Stage 2's read path: planned batches, the cache modes give the same batches and the same trained model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from toy_data import toy_manifest, write_toy_fold, write_toy_store

from cta_rnn import feature_cache as fc
from cta_rnn.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cache")
    m = toy_manifest(n_per_speaker=12, speakers=4)
    write_toy_store(root / "store", m, layers=3, dim=8)
    write_toy_fold(root / "fold1", m, "spk0", "spk1")
    return {"root": root, "store": root / "store", "fold": root / "fold1", "manifest": m}


def test_plan_is_a_function_of_the_seed_and_crops_stay_inside() -> None:
    frames = [5, 50, 12, 80, 7, 33]

    def plan(seed: int) -> list:
        return fc.plan_epoch(frames, 4, torch.Generator().manual_seed(seed), "random", crop=10)

    assert plan(3) == plan(3) and plan(3) != plan(4)
    items = [it for batch in plan(3) for it in batch]
    assert sorted(r for r, _, _ in items) == list(range(6))
    for r, start, n in items:
        assert n == min(10, frames[r]) and 0 <= start and start + n <= frames[r]
    shards = [fc.plan_epoch(frames * 3, 4, torch.Generator().manual_seed(0), rank=k, world_size=2) for k in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2  # 5 batches -> 2 per rank, the same count on every rank


def test_balanced_and_sorted_orders() -> None:
    frames = [3, 9, 1, 7]
    asc = fc.plan_epoch(frames, 2, torch.Generator().manual_seed(0), "ascending")
    assert [r for b in asc for r, _, _ in b] == [2, 0, 3, 1]
    gen = torch.Generator().manual_seed(0)
    bal = fc.plan_epoch(frames * 50, 400, gen, "balanced", weights=[1.0, 0.0, 0.0, 0.0] * 50)
    assert {r % 4 for b in bal for r, _, _ in b} == {0}  # only rows of weight > 0 are drawn


def test_gathered_batch_equals_the_store_and_pads_with_zeros(toy: dict[str, Path]) -> None:
    store = EmbeddingStore(toy["store"], layers=[0, 2])
    ids = store.ids()[:6]
    table = fc.FrameTable(store, ids, torch.device("cpu"))
    reader = fc.StoreReader(store, ids)
    items = [(0, 0, store.frames(ids[0])), (3, 2, 5), (5, 1, 3)]
    for source in (table, reader):
        feats, counts = source.gather(items)
        assert feats.dtype == torch.float16 and feats.shape == (3, int(counts.max()), 2, store.dim)
        for b, (r, start, n) in enumerate(items):
            want = store.get(ids[r], start, start + n).transpose(0, 1)  # (frames, layers, dim) float32
            assert torch.equal(feats[b, :n].float(), want.half().float())
            assert not feats[b, n:].any()


def test_cache_modes_yield_identical_batches(toy: dict[str, Path]) -> None:
    from cta_rnn.data import make_loaders, read_fold
    from cta_rnn.normalization import FeatureNormalizer

    store = EmbeddingStore(toy["store"])
    splits = read_fold(toy["fold"], store)
    ids = [u for df in splits.values() for u in df["ID"]]
    norm = FeatureNormalizer(store.num_layers, store.dim, "none")
    batches = {}
    for mode in ("ram", "stream"):
        source = fc.FeatureSource(store, ids, "cpu", mode, num_workers=2 if mode == "stream" else 0)
        assert source.mode == mode
        loaders = make_loaders(
            source, splits, ["neu", "hap", "ang", "sad"], norm, batch_size=5, eval_batch_size=4, seed=7, crop=10
        )
        loaders["train"].dataset.set_epoch(3)
        batches[mode] = [list(loaders["train"]), list(loaders["test"])]
    for a_split, b_split in zip(batches["ram"], batches["stream"]):
        assert len(a_split) == len(b_split) > 1
        for a, b in zip(a_split, b_split):
            assert a.ids == b.ids and torch.equal(a.feats, b.feats) and torch.equal(a.lengths, b.lengths)
            assert a.feats.dtype == torch.float16 and torch.equal(a.labels, b.labels)


def test_auto_mode_falls_back_to_streaming_when_ram_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fc.choose_mode("auto", 10**6, torch.device("cpu")) == "ram"
    monkeypatch.setattr(fc, "available_ram", lambda: 10**6)
    assert fc.choose_mode("auto", 10**7, torch.device("cpu")) == "stream"
    with pytest.raises(ValueError, match="cache: gpu needs a CUDA device"):
        fc.choose_mode("gpu", 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="cache must be one of"):
        fc.choose_mode("disk", 1, torch.device("cpu"))


@pytest.mark.slow
def test_cache_modes_train_the_same_model(toy: dict[str, Path], tmp_path: Path) -> None:
    """ram and stream: same seed -> byte-identical predictions and the same selected epoch."""
    outs = {}
    for mode in ("ram", "stream"):
        out = tmp_path / mode
        cmd = [
            sys.executable,
            "-m",
            "cta_rnn.train",
            str(ROOT / "recipes" / "shared" / "hparams" / "train.yaml"),
            f"--fold_dir={toy['fold']}",
            f"--store_dir={toy['store']}",
            f"--output_folder={out}",
            "--number_of_epochs=3",
            "--batch_size=8",
            "--device=cpu",
            f"--cache={mode}",
            "--max_train_seconds=0.5",
            "--normalization=speaker",
            "--model_kwargs={rnn_hidden: 16, attention_hidden: 8, classifier_hidden: 16}",
        ]
        p = subprocess.run(
            cmd,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        )
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
        assert f"feature cache: {mode}" in p.stdout + p.stderr
        outs[mode] = out
    assert (outs["ram"] / "predictions.csv").read_bytes() == (outs["stream"] / "predictions.csv").read_bytes()
    assert len(pd.read_csv(outs["ram"] / "predictions.csv")) == 12


def test_host_buffers_are_reused_never_overwrite_a_kept_batch_and_grow_to_the_largest() -> None:
    pool = fc.HostBuffers(keep=2)
    a = pool.empty((4, 8), torch.float16)
    a.fill_(1)
    b = pool.empty((4, 8), torch.float16)  # a is still held: another buffer
    assert b.data_ptr() != a.data_ptr()
    del b
    c = pool.empty((2, 8), torch.float16)  # b's buffer is free again and large enough
    assert (a == 1).all()
    ptr_c = c.data_ptr()
    del c
    big = pool.empty((64, 8), torch.float16)  # nothing fits: it replaces the smallest free buffer in the pool
    assert big.data_ptr() != ptr_c
    assert sorted(buf.numel() for buf, _ in pool.pool) == [32, 512]  # a's buffer kept (in use), the other grown
    ptr_big = big.data_ptr()
    del big
    again = pool.empty((64, 8), torch.float16)  # ... so the next large batch reuses it (no new allocation)
    assert again.data_ptr() == ptr_big
    assert (a == 1).all()


def test_release_frees_the_table_for_the_next_folds_cache(toy: dict[str, Path]) -> None:
    import gc
    import weakref

    store = EmbeddingStore(toy["store"])
    source = fc.FeatureSource(store, store.ids(), "cpu", "ram")
    first = store.ids()[0]
    before = source.utterance(first).clone()
    table = weakref.ref(source.table)
    source.release()
    gc.collect()
    assert table() is None  # nothing else keeps the frames alive (on a GPU: handed back by empty_cache)
    assert torch.equal(source.utterance(first), before)  # still readable, from the store
