"""Device decisions for one GPU, several GPUs under torchrun, cuda vs cuda:N, full and empty memory (on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_dump import FrameEncoder, make_corpus

from cta_rnn import device as dev
from cta_rnn.dump import dump, maybe_finalize
from cta_rnn.store import EmbeddingStore

GiB = 2**30


def torchrun(local_rank: int, local_world: int, rank: int | None = None, world: int | None = None) -> dict[str, str]:
    """The environment torchrun gives one process."""
    return {
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "RANK": str(local_rank if rank is None else rank),
        "WORLD_SIZE": str(local_world if world is None else world),
    }


@pytest.mark.parametrize(
    ("requested", "env", "gpus", "expected"),
    [
        (None, {}, 0, "cpu"),
        ("auto", {}, 0, "cpu"),
        ("cpu", torchrun(1, 2), 2, "cpu"),
        (None, {}, 1, "cuda:0"),
        ("cuda", {}, 2, "cuda:0"),
        ("cuda:1", {}, 2, "cuda:1"),
        # the lead of issue 22: under torchrun every rank must get its own GPU, not GPU 0
        ("cuda", torchrun(0, 4), 4, "cuda:0"),
        ("cuda", torchrun(3, 4), 4, "cuda:3"),
        (None, torchrun(2, 4), 4, "cuda:2"),
        # second node of a 2 x 2 run: global rank 3, local rank 1
        ("cuda", torchrun(1, 2, rank=3, world=4), 2, "cuda:1"),
        # one process under torchrun may name its GPU
        ("cuda:1", torchrun(0, 1), 2, "cuda:1"),
    ],
)
def test_each_process_gets_its_own_device(requested: str | None, env: dict, gpus: int, expected: str) -> None:
    assert dev.resolve_device(requested, dev.Facts(env, gpus)) == torch.device(expected)


@pytest.mark.parametrize(
    ("requested", "env", "gpus", "message"),
    [
        ("cuda", {}, 0, "no CUDA GPU"),
        ("cuda:2", {}, 2, "has 2 CUDA GPU"),
        ("cuda", torchrun(2, 3), 2, "has 2 CUDA GPU"),
        ("cuda:0", torchrun(1, 2), 2, "pass --device cuda"),
    ],
)
def test_impossible_requests_are_refused_not_moved_to_the_cpu(
    requested: str, env: dict, gpus: int, message: str
) -> None:
    with pytest.raises(dev.DeviceError, match=message):
        dev.resolve_device(requested, dev.Facts(env, gpus))


def test_ngpu_is_checked_against_the_gpus_there_are() -> None:
    dev.check_gpu_count(1, dev.Facts({}, 0))  # one process: the device decides
    dev.check_gpu_count(2, dev.Facts({}, 2))
    with pytest.raises(dev.DeviceError, match="--ngpu 2: this machine has 0 CUDA GPU"):
        dev.check_gpu_count(2, dev.Facts({}, 0))


def test_dump_shard_follows_the_global_rank() -> None:
    assert dev.dump_shard(None, None, {}) == (0, 1)
    assert dev.dump_shard(None, None, torchrun(1, 2, rank=3, world=4)) == (3, 4)
    assert dev.dump_shard(1, 2, torchrun(0, 4)) == (1, 2)  # explicit wins
    with pytest.raises(dev.DeviceError, match="shard 4 is not in 0..3"):
        dev.dump_shard(4, 4, {})


def test_cache_mode_for_full_and_empty_gpu_memory() -> None:
    table = 10 * GiB
    ram = 100 * GiB
    assert dev.choose_cache_mode("auto", table, "cuda", gpu_free=80 * GiB, ram_available=ram) == "gpu"
    # a nearly full GPU: the table goes to RAM, a full host too: streamed
    assert dev.choose_cache_mode("auto", table, "cuda", gpu_free=12 * GiB, ram_available=ram) == "ram"
    assert dev.choose_cache_mode("auto", table, "cuda", gpu_free=0, ram_available=GiB) == "stream"
    # the model's activations are left free: a table that fits alone but not beside a large batch
    big_batch = dev.activation_bytes(16, 1500, 33, 1280)  # 16 long large-v3 utterances: ~32 GB of fp32 copies
    assert big_batch > 20 * GiB
    assert dev.choose_cache_mode("auto", table, "cuda", gpu_free=40 * GiB, ram_available=ram) == "gpu"
    assert (
        dev.choose_cache_mode(
            "auto", table, "cuda", gpu_free=40 * GiB, ram_available=ram, headroom=dev.gpu_headroom(big_batch)
        )
        == "ram"
    )
    # several folds at once on one GPU (stages.sh --nj 2) each take their share of the same free memory
    assert dev.choose_cache_mode("auto", 30 * GiB, "cuda", gpu_free=70 * GiB, ram_available=ram) == "gpu"
    assert dev.choose_cache_mode("auto", 30 * GiB, "cuda", gpu_free=70 * GiB, ram_available=ram, processes=2) == "ram"
    assert dev.processes_per_gpu({dev.PROCESSES_PER_GPU: "2"}) == 2
    assert dev.processes_per_gpu({}) == 1


def test_forced_cache_modes() -> None:
    assert dev.choose_cache_mode("ram", 10**12, "cuda", gpu_free=0) == "ram"
    assert dev.choose_cache_mode("gpu", 1, "cuda") == "gpu"
    with pytest.raises(dev.DeviceError, match="cache: gpu needs a CUDA device; this fold trains on cpu"):
        dev.choose_cache_mode("gpu", 1, "cpu")
    with pytest.raises(dev.DeviceError, match="cache must be one of"):
        dev.choose_cache_mode("disk", 1, "cpu")


def test_auto_dtype_is_float16_on_cuda_only() -> None:
    assert dev.auto_dtype("cuda") == "float16"
    assert dev.auto_dtype("cpu") == "float32"


class OverflowingEncoder(FrameEncoder):
    """FrameEncoder whose float16 compute overflows (inf states); float32 gives the normal states."""

    dtype_name = "float16"

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[str] = []

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.dtypes.append(self.dtype_name)
        hidden, counts = super().encode(wavs, lengths)
        if self.dtype_name == "float16":
            hidden = hidden.clone()
            hidden[:, 1, 0, 0] = float("inf")
        return hidden, counts


def test_a_float16_overflow_is_encoded_again_in_float32(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    enc = OverflowingEncoder()
    summary = dump(corpus, enc, tmp_path / "store", num_workers=0)
    assert summary["float32_retries"] == len(corpus)
    assert enc.dtype_name == "float16"  # restored after each retry
    assert enc.dtypes.count("float32") == enc.dtypes.count("float16")
    ref_dir = tmp_path / "ref"
    dump(corpus, FrameEncoder(), ref_dir, num_workers=0)
    assert maybe_finalize(corpus, tmp_path / "store", 1) and maybe_finalize(corpus, ref_dir, 1)
    store, ref = EmbeddingStore(tmp_path / "store"), EmbeddingStore(ref_dir)
    for uid in corpus["ID"]:
        np.testing.assert_array_equal(store.read(uid), ref.read(uid))
