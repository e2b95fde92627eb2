"""``frame_pool: N``: a wrapper encoder that averages N consecutive valid frames (smaller stores, lower frame rate).

Frame ``j`` of the pooled output is the mean of the inner encoder's valid frames ``[j*N, (j+1)*N)``; the last
window of an utterance averages only its valid frames, so an utterance of ``T`` frames gives ``ceil(T / N)``
and padding never leaks into a valid frame. ``build_encoder`` applies it, so a store's identity
(``describe()["frame_pool"]``) rebuilds the same pooled encoder at inference.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cta_rnn.encoders.base import LayerwiseEncoder


def pool_frames(hidden: torch.Tensor, frames: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average ``n`` consecutive valid frames of (B, L, T, D) states; returns (B, L, ceil(T/n), D) and frame counts.

    Sums are taken in float32, the result has the input's dtype; windows with no valid frame are zeros.
    """
    b, layers, t, d = hidden.shape
    out_t = math.ceil(t / n)
    valid = torch.arange(out_t * n, device=hidden.device)[None] < frames.to(hidden.device)[:, None]  # (B, T')
    x = torch.nn.functional.pad(hidden, (0, 0, 0, out_t * n - t))
    x = torch.where(valid[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    sums = x.reshape(b, layers, out_t, n, d).sum(3, dtype=torch.float32)
    counts = valid.reshape(b, out_t, n).sum(-1).clamp(min=1)
    pooled = (sums / counts[:, None, :, None]).to(hidden.dtype)
    return pooled, (frames + n - 1) // n


class FramePoolEncoder(LayerwiseEncoder):
    """``inner`` with its frames averaged ``frame_pool`` at a time (see module docstring)."""

    def __init__(self, inner: LayerwiseEncoder, frame_pool: int):
        super().__init__()
        if isinstance(frame_pool, bool) or not isinstance(frame_pool, int) or frame_pool < 1:
            raise ValueError(f"frame_pool must be a positive integer, got {frame_pool!r}")
        self.inner = inner
        self.frame_pool = frame_pool
        self.layers, self.num_layers = list(inner.layers), inner.num_layers
        self.total_layers, self.dim, self.sample_rate = inner.total_layers, inner.dim, inner.sample_rate
        self.frame_rate = inner.frame_rate / frame_pool

    def __getattr__(self, name: str) -> Any:
        """Anything else (device, extractor, ...) comes from the inner encoder."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def num_frames(self, num_samples: int) -> int:
        """Pooled frames of a clip: ``ceil(inner frames / frame_pool)``."""
        return math.ceil(self.inner.num_frames(num_samples) / self.frame_pool)

    def describe(self) -> dict[str, Any]:
        """The inner identity with ``frame_pool`` and the pooled frame rate."""
        return {**self.inner.describe(), "frame_pool": self.frame_pool, "frame_rate": self.frame_rate}

    @torch.no_grad()
    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner encoder's states, pooled in time."""
        hidden, frames = self.inner.encode(wavs, lengths)
        return pool_frames(hidden, frames, self.frame_pool)
