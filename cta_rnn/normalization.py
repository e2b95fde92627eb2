"""Feature normalisation, fitted in training and saved with the model as buffers (so ``.to(device)`` moves it).

``FeatureNormalizer`` standardises (batch, layers, frames, dim) features in two optional steps:

1. per speaker (``mode="speaker"``): with the statistics of the utterance's speaker, computed without labels
   from that speaker's utterances (training, validation and test speakers alike: classic SER practice);
   an unknown speaker gets the *average training speaker* (a persistent buffer), or statistics adapted at
   inference time (:meth:`FeatureNormalizer.set_speakers`);
2. globally (``mode`` "global" or "speaker"): with (layer, dim) statistics of the training set after step 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

MODES = ("global", "speaker", "none")
STD_FLOOR = 1e-5


def running_stats(tensors: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over frames of (frames, layers, dim) tensors -> (layers, dim) each (float64 sums)."""
    s1 = s2 = None
    total = 0
    for x in tensors:
        x = x.double()
        if s1 is None:
            s1, s2 = x.sum(0), (x * x).sum(0)
        else:
            s1 += x.sum(0)
            s2 += (x * x).sum(0)
        total += x.shape[0]
    if s1 is None or total == 0:
        raise ValueError("no frames to compute normalisation statistics from")
    mean = s1 / total
    var = (s2 / total - mean * mean).clamp(min=0.0)
    return mean.float(), var.sqrt().float()


class FeatureNormalizer(nn.Module):
    """Speaker and/or global standardisation of (B, L, T, D) features; identity until fitted."""

    def __init__(self, num_layers: int, dim: int, mode: str = "global") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"normalization must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.zeros(num_layers, dim))
        self.register_buffer("std", torch.ones(num_layers, dim))
        self.register_buffer("fallback_mean", torch.zeros(num_layers, dim))
        self.register_buffer("fallback_std", torch.ones(num_layers, dim))
        # per-speaker statistics of the data at hand (not saved: they describe a data set, not the model)
        self.register_buffer("speaker_mean", torch.zeros(0, num_layers, dim), persistent=False)
        self.register_buffer("speaker_std", torch.ones(0, num_layers, dim), persistent=False)
        self.speakers: dict[str, int] = {}

    def set_global(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Install the training set's (layers, dim) statistics."""
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=STD_FLOOR))

    def set_speakers(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per-speaker (mean, std) of the data that will be normalised (replaces earlier ones)."""
        names = sorted(stats)
        if not names:
            raise ValueError("no speaker statistics given")
        self.speakers = {s: i for i, s in enumerate(names)}
        self.speaker_mean = torch.stack([stats[s][0] for s in names]).to(self.mean.device)
        self.speaker_std = torch.stack([stats[s][1] for s in names]).to(self.mean.device).clamp(min=STD_FLOOR)

    def set_fallback(self, train_speakers: Iterable[str]) -> None:
        """The average of the training speakers' statistics: used for speakers without statistics."""
        idx = [self.speakers[s] for s in sorted(set(train_speakers))]
        self.fallback_mean.copy_(self.speaker_mean[idx].mean(0))
        self.fallback_std.copy_(self.speaker_std[idx].mean(0))

    def speaker_index(self, speakers: Iterable[str] | None, batch: int) -> torch.Tensor:
        """Row of each utterance's speaker in the statistics table (-1: the fallback)."""
        if speakers is None:
            return torch.full((batch,), -1, dtype=torch.long)
        return torch.tensor([self.speakers.get(str(s), -1) for s in speakers], dtype=torch.long)

    def forward(
        self, x: torch.Tensor, speaker_idx: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, T, D) of any float dtype -> float32 standardised (and 0 where ``mask`` (B, T) is False).

        ``speaker_idx`` (B,): rows of :meth:`set_speakers` (-1 = the fallback). Speaker then global
        standardisation are one affine map per (utterance, layer, dim), applied in one pass.
        """
        if self.mode != "none":  # float16 in, float32 out: one pass, no float32 copy of the input first
            scale, shift = self.affine(x.shape[0], speaker_idx)
            x = torch.addcmul(shift[:, :, None], x, scale[:, :, None])
            return x if mask is None else x.mul_(mask[:, None, :, None])
        x = x.float()
        return x if mask is None else x * mask[:, None, :, None]

    def affine(self, batch: int, speaker_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 1, L, D) scale and shift of ``x * scale + shift`` = ((x - m_spk) / s_spk - m) / s."""
        scale, shift = 1.0 / self.std[None], -self.mean[None] / self.std[None]
        if self.mode == "speaker":
            mean, std = self.batch_stats(batch, speaker_idx)
            scale, shift = scale / std, shift - mean * scale / std
        return scale, shift

    def batch_stats(self, batch: int, speaker_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) mean and std for a batch: table rows, the fallback where the index is -1 or no table is set."""
        fallback = self.fallback_mean.expand(batch, -1, -1), self.fallback_std.expand(batch, -1, -1)
        if speaker_idx is None or self.speaker_mean.shape[0] == 0:
            return fallback
        idx = speaker_idx.to(self.mean.device)
        known = (idx >= 0)[:, None, None]
        safe = idx.clamp(min=0)
        return (
            torch.where(known, self.speaker_mean[safe], fallback[0]),
            torch.where(known, self.speaker_std[safe], fallback[1]),
        )
