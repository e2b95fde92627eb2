"""Device decisions: which device a process uses, which cache mode fits, how much GPU memory to leave free.

Every decision is a function of the facts passed in (environment variables, GPU count, free memory, sizes),
so the logic for one GPU, several GPUs under torchrun (``RANK``/``LOCAL_RANK``/``WORLD_SIZE``), ``cuda`` vs
``cuda:N`` and full or empty device memory is unit-tested on a CPU; :func:`facts` reads them from the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

MODES = ("auto", "gpu", "ram", "stream")
SAFETY = 0.8
"""Share of the free GPU memory (or available RAM) a feature cache may take."""
BASE_HEADROOM = 2 * 2**30
"""GPU bytes always left free for the CUDA context, cuDNN/cuBLAS workspaces and allocator fragmentation."""
ACTIVATION_COPIES = 8
"""fp32 copies of the largest batch the model holds at once while training (input, normalised, fused layers,
projection, BiLSTM states, their gradients): a generous upper bound for the CTA-RNN models of models.py."""
PROCESSES_PER_GPU = "CTA_RNN_PROCESSES_PER_GPU"
"""Set by the stage driver when it runs several folds at once on one GPU (``--nj``): each takes its share."""


class DeviceError(ValueError):
    """A device request that cannot be honoured on this machine (the message says why)."""


@dataclass(frozen=True)
class Facts:
    """What the device decisions depend on."""

    env: Mapping[str, str]
    cuda_count: int


def facts() -> Facts:
    """The facts of this process and machine."""
    return Facts(dict(os.environ), torch.cuda.device_count() if torch.cuda.is_available() else 0)


def local_rank(env: Mapping[str, str]) -> int | None:
    """torchrun's ``LOCAL_RANK`` (this process's GPU on its node), None outside torchrun."""
    value = env.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def resolve_device(requested: str | None, f: Facts) -> torch.device:
    """The device this process computes on.

    ``None``/``auto``: this process's GPU if there is one, else the CPU. ``cuda``: ``cuda:LOCAL_RANK`` under
    torchrun, else ``cuda:0``. ``cuda:N``: as given, refused under a multi-process torchrun run where it would put
    another rank's process on this GPU. A GPU that is not there is refused (never a silent CPU fallback).
    """
    rank = local_rank(f.env)
    req = (requested or "auto").strip().lower()
    if req == "auto":
        req = "cuda" if f.cuda_count else "cpu"
    dev = torch.device(req)
    if dev.type != "cuda":
        return dev
    if f.cuda_count == 0:
        raise DeviceError(f"device {requested!r}: this machine has no CUDA GPU (use --device cpu)")
    index = dev.index
    if index is None:
        index = rank if rank is not None else 0
    elif rank is not None and int(f.env.get("LOCAL_WORLD_SIZE", "1")) > 1 and index != rank:
        raise DeviceError(
            f"device {requested!r} under torchrun puts local rank {rank} on GPU {index} beside rank {index}: "
            "pass --device cuda (each process takes its LOCAL_RANK's GPU)"
        )
    if index >= f.cuda_count:
        raise DeviceError(f"device cuda:{index}: this machine has {f.cuda_count} CUDA GPU(s)")
    return torch.device("cuda", index)


def check_gpu_count(ngpu: int, f: Facts) -> None:
    """Refuse ``--ngpu N`` before launching torchrun when the machine has fewer GPUs."""
    if ngpu > 1 and f.cuda_count < ngpu:
        raise DeviceError(f"--ngpu {ngpu}: this machine has {f.cuda_count} CUDA GPU(s)")


def dump_shard(shard: int | None, num_shards: int | None, env: Mapping[str, str]) -> tuple[int, int]:
    """This dump writer's shard and the shard count: as given, else torchrun's global ``RANK``/``WORLD_SIZE``."""
    s = shard if shard is not None else int(env.get("RANK", 0))
    n = num_shards if num_shards is not None else int(env.get("WORLD_SIZE", 1))
    if not 0 <= s < n:
        raise DeviceError(f"shard {s} is not in 0..{n - 1} (--shard/--num_shards or RANK/WORLD_SIZE)")
    return s, n


def auto_dtype(device_type: str) -> str:
    """The encoder's compute dtype for ``dtype: auto``: float16 autocast on CUDA, float32 on the CPU.

    Not bfloat16: measured against the CPU float32 path on real Whisper tiny.en states (shared/gpu.md),
    float16 autocast is 0.02-0.12% off, bfloat16 0.26-1.25% (8 bits of mantissa against 11), and the store is
    float16 anyway. The overflow float16 can hit in a large encoder is handled where it happens: the dump
    re-encodes a batch with non-finite states in float32 (``cta_rnn.dump.encode_finite``).
    """
    return "float16" if device_type == "cuda" else "float32"


def activation_bytes(batch_size: int, frames: int, layers: int, dim: int) -> int:
    """Upper bound of the model's own GPU memory for one batch of ``batch_size`` x ``frames`` (fp32 copies)."""
    return ACTIVATION_COPIES * batch_size * frames * layers * dim * 4


def gpu_headroom(batch_bytes: int = 0) -> int:
    """GPU bytes to leave free beside a feature cache: the fixed base plus the model's activations."""
    return BASE_HEADROOM + batch_bytes


def choose_cache_mode(
    mode: str,
    nbytes: int,
    device_type: str,
    *,
    gpu_free: int = 0,
    ram_available: int = 0,
    headroom: int = BASE_HEADROOM,
    processes: int = 1,
) -> str:
    """The feature cache mode for ``nbytes`` of fp16 features.

    ``auto``: ``gpu`` if the table fits in this process's share of the free GPU memory (``processes`` share one
    GPU) with ``headroom`` left, else ``ram`` if it fits in its share of the available RAM, else ``stream``.
    A forced mode is honoured when possible; ``gpu`` without a CUDA device is refused naming the device.
    """
    if mode not in MODES:
        raise DeviceError(f"cache must be one of {MODES}, got {mode!r}")
    processes = max(1, processes)
    if mode == "gpu" and device_type != "cuda":
        raise DeviceError(f"cache: gpu needs a CUDA device; this fold trains on {device_type} (see --device)")
    if mode != "auto":
        return mode
    if device_type == "cuda" and nbytes + headroom < SAFETY * gpu_free / processes:
        return "gpu"
    return "ram" if nbytes < SAFETY * ram_available / processes else "stream"


def processes_per_gpu(env: Mapping[str, str]) -> int:
    """How many processes the driver runs at once on one GPU (``CTA_RNN_PROCESSES_PER_GPU``, default 1)."""
    try:
        return max(1, int(env.get(PROCESSES_PER_GPU, "1")))
    except ValueError:
        return 1
