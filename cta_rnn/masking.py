"""Length masks and masked reductions over the frame axis (SpeechBrain relative-length convention)."""

from __future__ import annotations

import torch


def frame_counts(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Relative lengths in (0, 1] -> integer valid frame counts (at least 1)."""
    return torch.clamp(torch.round(lengths.float() * max_frames).long(), min=1, max=max_frames)


def length_mask(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """(batch, frames) boolean mask, True on valid frames."""
    counts = frame_counts(lengths, max_frames)
    return torch.arange(max_frames, device=lengths.device)[None, :] < counts[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` (broadcastable to x) is True."""
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Max of ``x`` over ``dim`` ignoring positions where ``mask`` is False."""
    return x.masked_fill(~mask, torch.finfo(x.dtype).min).amax(dim)
