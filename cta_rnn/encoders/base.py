"""The one interface every frozen layer-wise encoder backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


def select_layers(spec: Any, num_available: int) -> list[int]:
    """Resolve a layer selection: ``"all"``/None, a list of ints, or a range string ``"a-b"`` (inclusive).

    Negative indices count from the end. Raises ValueError naming the bad entry.
    """
    if spec is None or spec == "all":
        return list(range(num_available))
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        if "-" in spec.strip("-"):
            lo, hi = spec.split("-", 1)
            spec = list(range(int(lo), int(hi) + 1))
        else:
            spec = [int(x) for x in spec.split(",") if x.strip()]
    out = []
    for k in spec:
        k = int(k)
        idx = k + num_available if k < 0 else k
        if not 0 <= idx < num_available:
            raise ValueError(f"layer {k} out of range: encoder has {num_available} layers (0..{num_available - 1})")
        out.append(idx)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate layers in selection {spec}")
    return out


class LayerwiseEncoder(ABC, torch.nn.Module):
    """A frozen encoder that returns the hidden states of its selected layers.

    Attributes every backend sets: ``num_layers`` (selected layers), ``dim``, ``frame_rate``
    (frames per second), ``sample_rate`` (expected input rate, 16 kHz), ``layers`` (selected indices
    into ``total_layers``), ``total_layers``.
    """

    num_layers: int
    total_layers: int
    layers: list[int]
    dim: int
    frame_rate: float
    sample_rate: int = 16000

    @abstractmethod
    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        Args:
            wavs: (batch, samples) float waveforms at ``sample_rate``, mono.
            lengths: (batch,) relative lengths in (0, 1] (SpeechBrain convention).

        Returns:
            hidden: (batch, num_layers, frames, dim) float tensor (frames = longest valid).
            frames: (batch,) long tensor of valid frame counts per utterance.
        """

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Identity for the embedding store metadata: backend, source, revision, layers, dim, frame_rate."""

    def num_frames(self, num_samples: int) -> int:
        """Valid output frames for a clip of ``num_samples`` samples (backends override exactly)."""
        return int(num_samples * self.frame_rate / self.sample_rate)

    def freeze(self) -> None:
        """Eval mode, no gradients, dropout off."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)


def relative_to_samples(lengths: torch.Tensor, max_len: int) -> list[int]:
    """Relative lengths -> absolute sample counts (rounded)."""
    return [round(float(x) * max_len) for x in lengths]


def autocast_context(device: torch.device | str, dtype: str | None):
    """fp16/bf16 autocast on GPU (and bf16 on CPU where asked); a no-op context otherwise."""
    device = torch.device(device)
    if dtype in (None, "float32", "fp32"):
        return torch.autocast(device.type, enabled=False)
    torch_dtype = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[
        dtype
    ]
    if device.type == "cpu" and torch_dtype == torch.float16:
        torch_dtype = torch.bfloat16
    return torch.autocast(device.type, dtype=torch_dtype)


def split_chunks(
    wavs: torch.Tensor, samples: list[int], chunk_samples: int | None, min_samples: int = 1
) -> tuple[list[torch.Tensor], list[int]]:
    """Cut each clip's valid samples into chunks of at most ``chunk_samples`` (None: whole clips).

    Returns the chunks and the batch index owning each one. A trailing piece shorter than
    ``min_samples`` is dropped (it would yield no frames); a clip shorter than that raises ValueError.
    """
    chunks, owner = [], []
    for b, n in enumerate(samples):
        if n < min_samples:
            raise ValueError(f"clip {b} has {n} samples: fewer than the encoder's minimum {min_samples}")
        step = chunk_samples or n
        for start in range(0, n, step):
            piece = wavs[b, start : min(n, start + step)]
            if len(piece) >= min_samples:
                chunks.append(piece)
                owner.append(b)
    return chunks, owner


def merge_chunks(
    states: list[torch.Tensor], owner: list[int], chunk_frames: list[int], batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer chunk states [(C, T, D)] -> ((batch, layers, frames, D) float32, frames per clip), concatenated."""
    frames = torch.zeros(batch, dtype=torch.long)
    for b, t in zip(owner, chunk_frames, strict=True):
        frames[b] += t
    dim = states[0].shape[-1]
    out = torch.zeros(batch, len(states), int(frames.max()), dim, device=states[0].device)
    pos = [0] * batch
    for c, (b, t) in enumerate(zip(owner, chunk_frames, strict=True)):
        for k, h in enumerate(states):
            out[b, k, pos[b] : pos[b] + t] = h[c, :t].float()
        pos[b] += t
    return out, frames
