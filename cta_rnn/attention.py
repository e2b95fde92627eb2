"""The two attention blocks of CTA-RNN: channel-wise (over encoder layers) and temporal-wise (over frames)."""

from __future__ import annotations

import torch
from torch import nn

from cta_rnn.masking import masked_max, masked_mean


class ChannelAttention(nn.Module):
    """CBAM-style gate over the stack of encoder layers ("channels").

    Each layer of x (batch, layers, frames, dim) is squeezed over valid frames and features by masked
    mean and max pooling; one MLP (layers -> layers/reduction -> layers) shared by both poolings gives
    a sigmoid gate per layer. Optionally an SE-style gate over the ``dim`` feature channels follows.

    Args:
        num_layers: number of stacked encoder layers L.
        dim: feature dimension D (only needed for the feature gate).
        reduction: reduction ratio of the layer MLP (hidden = max(1, L // reduction)).
        feature_gate: also gate the D feature channels (SE, reduction ``feature_reduction``).
    """

    def __init__(
        self, num_layers: int, dim: int = 0, reduction: int = 2, feature_gate: bool = False, feature_reduction: int = 2
    ) -> None:
        super().__init__()
        hidden = max(1, num_layers // reduction)
        self.mlp = nn.Sequential(nn.Linear(num_layers, hidden), nn.ReLU(), nn.Linear(hidden, num_layers))
        self.feature_mlp = None
        if feature_gate:
            if dim <= 0:
                raise ValueError("feature_gate needs the feature dim")
            self.feature_mlp = nn.Sequential(
                nn.Linear(dim, max(1, dim // feature_reduction)),
                nn.ReLU(),
                nn.Linear(max(1, dim // feature_reduction), dim),
            )

    def gate(self, x: torch.Tensor, mask: torch.Tensor, zero_padded: bool = False) -> torch.Tensor:
        """The (B, L) layer gate of x (B, L, T, D) given the frame mask (B, T).

        ``zero_padded``: x is already 0 on padded frames (saves one pass over x for the mean).
        """
        m = mask[:, None, :, None]
        total = (x if zero_padded else x * m).sum((2, 3))
        avg = total / (mask.sum(1).clamp(min=1) * x.shape[3])[:, None]
        mx = masked_max(x, m, (2, 3))
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate the layers of x (B, L, T, D) given the frame mask (B, T); returns (gated x, gate (B, L))."""
        gate = self.gate(x, mask)
        x = x * gate[:, :, None, None]
        if self.feature_mlp is not None:
            fm = mask[:, None, :, None].expand(-1, x.shape[1], -1, 1)
            squeezed = masked_mean(x.transpose(1, 3).flatten(2), fm.transpose(1, 3).flatten(2), dim=2)  # (B, D)
            x = x * torch.sigmoid(self.feature_mlp(squeezed))[:, None, None, :]
        return x, gate


FUSIONS = ("sum", "mean", "weighted", "concat")


class LayerFusion(nn.Module):
    """Fuse (B, L, T, D) into (B, T, D): ``sum`` of (gated) layers, ``mean``, or ``weighted`` (learnable 1x1 conv);
    or into (B, T, L*D): ``concat`` of the (gated) layers, so that what follows weighs each layer's features
    with its own weights."""

    def __init__(self, num_layers: int, mode: str = "sum") -> None:
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"unknown layer fusion {mode!r}: use one of {', '.join(FUSIONS)}")
        self.mode = mode
        self.weight = nn.Parameter(torch.full((num_layers,), 1.0 / num_layers)) if mode == "weighted" else None

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse the layer axis of x (B, L, T, D), each layer first scaled by ``gate`` (B, L) when given.

        One pass over x: the gated stack is never materialised (except for ``concat``, whose output it is).
        """
        if self.mode == "concat":
            x = x if gate is None else x * gate[:, :, None, None]
            return x.transpose(1, 2).flatten(2)
        weights = x.new_ones(x.shape[0], x.shape[1]) if gate is None else gate
        if self.mode == "mean":
            weights = weights / x.shape[1]
        elif self.mode == "weighted":
            weights = weights * self.weight[None]
        out = x[:, 0] * weights[:, 0, None, None]
        for k in range(1, x.shape[1]):
            out = torch.addcmul(out, x[:, k], weights[:, k, None, None])
        return out


class TemporalAttention(nn.Module):
    """Attentive pooling: a masked softmax over frames of a small scoring MLP; padded frames get weight 0."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False)
        )  # softmax ignores a bias

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool h (B, T, H) with mask (B, T) into (B, H); also return the weights (B, T)."""
        scores = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = weights.masked_fill(~mask, 0.0)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1), weights
