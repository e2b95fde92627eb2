"""CTA-RNN and the baselines it is compared against, all taking (batch, layers, frames, dim) + relative lengths."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cta_rnn.attention import ChannelAttention, LayerFusion, TemporalAttention
from cta_rnn.masking import frame_counts, length_mask, masked_mean
from cta_rnn.normalization import FeatureNormalizer


class Classifier(nn.Sequential):
    """Linear -> activation -> dropout -> linear."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.25, act: str = "relu"):
        activation = {"relu": nn.ReLU(), "prelu": nn.PReLU()}[act]
        super().__init__(nn.Linear(in_dim, hidden), activation, nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class DimensionHead(nn.Module):
    """Regression head for dimensional emotion: (Linear -> activation -> dropout ->) Linear to K values, in
    standardised units, returned on the corpus's scale (times the training std, plus the training mean, kept as
    buffers so the model carries its own scaling)."""

    def __init__(self, in_dim: int, num_dimensions: int, hidden: int = 128, dropout: float = 0.25, act: str = "relu"):
        super().__init__()
        self.net = (
            Classifier(in_dim, num_dimensions, hidden, dropout, act) if hidden else nn.Linear(in_dim, num_dimensions)
        )
        self.register_buffer("mean", torch.zeros(num_dimensions))
        self.register_buffer("std", torch.ones(num_dimensions))

    def set_stats(self, mean: list[float], std: list[float]) -> None:
        """Training mean and standard deviation of each dimension (the scale outputs are returned on)."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, K) on the corpus's scale."""
        return self.net(pooled) * self.std + self.mean


def output_heads(
    in_dim: int, num_classes: int, num_dimensions: int, hidden: int, dropout: float, act: str
) -> tuple[nn.Module | None, DimensionHead | None]:
    """The classifier (None without classes) and the dimension head (None without dimensions) of a model."""
    if num_classes <= 0 and num_dimensions <= 0:
        raise ValueError("a model needs classes (task categorical/both) or dimensions (task dimensional/both)")
    classifier = Classifier(in_dim, num_classes, hidden, dropout, act) if num_classes > 0 else None
    regressor = DimensionHead(in_dim, num_dimensions, hidden, dropout, act) if num_dimensions > 0 else None
    return classifier, regressor


def apply_heads(heads: Sequence[nn.Module | None], pooled: torch.Tensor) -> torch.Tensor:
    """(B, C + K): class logits then dimension values of the present ``heads`` (classifier, regressor; C or K may
    be 0, see :func:`split_outputs`)."""
    parts = [head(pooled) for head in heads if head is not None]
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def split_outputs(out: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits (B, C) and dimension values (B, K) of a model's output (B, C + K)."""
    return out[:, :num_classes], out[:, num_classes:]


class CTARNN(nn.Module):
    """Channel and Temporal-wise Attention RNN (Chen & Zhang, Interspeech 2022), as reconstructed in README.

    channel attention over layers -> layer fusion -> BiLSTM -> temporal attention pooling -> classifier.
    Every part is a switch, so the ablations are one hparam each:

    Args:
        num_layers, input_dim, num_classes: shape of the input stack and the label set.
        channel_attention: gate the layers (False = plain fusion, e.g. uniform average with fusion="mean").
        reduction: reduction ratio of the channel-attention MLP.
        feature_gate: add the SE-style gate over feature dims.
        fusion: "sum" | "mean" | "weighted" (learnable per-layer weights) | "concat" (layers side by side:
            L*D features, each layer's with its own weights in the projection or the RNN).
        rnn_hidden, rnn_layers: BiLSTM size per direction (0 hidden = no RNN).
        pooling: "attention" (temporal attention) | "mean" (masked mean).
        input_proj: optional linear projection of the fused features before the RNN (0 = none).
        dropout: dropout on RNN outputs and in the classifier.
        normalization: "global" | "speaker" | "none" (see cta_rnn.normalization.FeatureNormalizer).
        temporal_pool: average every k fused frames (masked) before the RNN: 50 Hz -> 25 Hz with 2.
        input_mean: also give the classifier the masked mean of the (projected) fused frames, beside the
            attention-pooled RNN outputs (an utterance-statistics skip around the BiLSTM).
        num_dimensions: size of the regression head for dimensional emotion on the same pooled representation
            (0 = none; num_classes 0 = no classifier).
    """

    def __init__(
        self,
        num_layers: int,
        input_dim: int,
        num_classes: int = 4,
        channel_attention: bool = True,
        reduction: int = 2,
        feature_gate: bool = False,
        fusion: str = "sum",
        rnn_hidden: int = 128,
        rnn_layers: int = 1,
        pooling: str = "attention",
        attention_hidden: int = 64,
        input_proj: int = 0,
        classifier_hidden: int = 128,
        dropout: float = 0.25,
        activation: str = "relu",
        normalization: str = "global",
        temporal_pool: int = 1,
        input_mean: bool = False,
        num_dimensions: int = 0,
    ) -> None:
        super().__init__()
        self.temporal_pool = int(temporal_pool)
        if pooling not in ("attention", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}: use attention or mean")
        self.num_layers, self.input_dim, self.num_classes = num_layers, input_dim, num_classes
        self.num_dimensions = num_dimensions
        self.normalizer = FeatureNormalizer(num_layers, input_dim, normalization)
        self.channel = ChannelAttention(num_layers, input_dim, reduction, feature_gate) if channel_attention else None
        self.fusion = LayerFusion(num_layers, fusion)
        feat = input_dim * num_layers if fusion == "concat" else input_dim
        self.proj = None
        if input_proj:
            self.proj = nn.Sequential(nn.Linear(feat, input_proj), nn.ReLU(), nn.Dropout(dropout))
            feat = input_proj
        skip = feat if input_mean else 0  # width of the (projected) fused frames, averaged for the classifier
        self.rnn = None
        if rnn_hidden:
            self.rnn = nn.LSTM(
                feat,
                rnn_hidden,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if rnn_layers > 1 else 0.0,
            )
            feat = 2 * rnn_hidden
        self.rnn_dropout = nn.Dropout(dropout)
        self.temporal = TemporalAttention(feat, attention_hidden) if pooling == "attention" else None
        self.input_mean = bool(input_mean)
        self.classifier, self.regressor = output_heads(
            feat + skip, num_classes, num_dimensions, classifier_hidden, dropout, activation
        )

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        speaker_idx: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, L, T, D) of any float dtype, lengths (B,) relative, speaker_idx (B,) rows of the normaliser's
        speaker table (None or -1: the average training speaker) -> outputs (B, C + K): class logits, then the
        K dimension values (:func:`split_outputs`)
        [, {"channel": (B, L), "temporal": (B, T)}]."""
        check_input(x, self.num_layers, self.input_dim)
        batch, _, frames, _ = x.shape
        mask = length_mask(lengths, frames)
        x = self.normalizer(x, speaker_idx, mask)  # float32, zero on padded frames
        att: dict[str, torch.Tensor] = {}
        if self.channel is None:
            att["channel"] = x.new_full((batch, self.num_layers), 1.0 / self.num_layers)
            h = self.fusion(x)
        elif self.channel.feature_mlp is None:  # gate and fuse in one pass
            att["channel"] = self.channel.gate(x, mask, zero_padded=True)
            h = self.fusion(x, att["channel"])
        else:
            x, att["channel"] = self.channel(x, mask)
            h = self.fusion(x)
        if self.proj is not None:
            h = self.proj(h)
        full_mask = mask
        skip = masked_mean(h, mask[:, :, None], dim=1) if self.input_mean else None
        if self.temporal_pool > 1:
            h, lengths, mask = pool_frames(h, mask, self.temporal_pool)
            frames = h.shape[1]
        if self.rnn is not None:
            counts = frame_counts(lengths, frames).cpu()
            packed = pack_padded_sequence(h, counts, batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=frames)
        h = self.rnn_dropout(h)
        if self.temporal is not None:
            pooled, att["temporal"] = self.temporal(h, mask)
        else:
            pooled = masked_mean(h, mask[:, :, None], dim=1)
            att["temporal"] = mask.float() / mask.float().sum(1, keepdim=True)
        if self.temporal_pool > 1:
            att["temporal"] = unpool_weights(att["temporal"], full_mask, self.temporal_pool)
        if skip is not None:
            pooled = torch.cat([pooled, skip], dim=-1)
        out = apply_heads((self.classifier, self.regressor), pooled)
        return (out, att) if return_attention else out


def pool_frames(h: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked average of every k frames of h (B, T, H): returns pooled h, new relative lengths and mask."""
    batch, frames, dim = h.shape
    pad = (-frames) % k
    m = torch.nn.functional.pad(mask, (0, pad)).float()
    h = torch.nn.functional.pad(h * mask[:, :, None], (0, 0, 0, pad))
    summed = h.view(batch, -1, k, dim).sum(2)
    counts = m.view(batch, -1, k).sum(2)
    pooled = summed / counts.clamp(min=1.0)[:, :, None]
    new_mask = counts > 0
    lengths = new_mask.sum(1).float() / new_mask.shape[1]
    return pooled, lengths, new_mask


def unpool_weights(w: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Spread pooled frame weights (B, T/k) back over the original valid frames (B, T); sums are kept."""
    frames = mask.shape[1]
    counts = torch.nn.functional.pad(mask, (0, (-frames) % k)).float().view(mask.shape[0], -1, k).sum(2)
    per_frame = (w / counts.clamp(min=1.0)).repeat_interleave(k, dim=1)[:, :frames]
    return per_frame * mask


class RNNMeanPool(CTARNN):
    """Baseline: uniform average of the given layers (one layer = single-layer model) -> BiLSTM -> mean pooling.

    Takes CTARNN's keyword arguments; the three that define it (channel_attention, fusion, pooling) may only be
    given with the values it fixes (its YAMLs restate ``fusion: mean`` over a recipe's own fusion).
    """

    FIXED = {"channel_attention": False, "fusion": "mean", "pooling": "mean"}

    def __init__(self, num_layers: int, input_dim: int, num_classes: int = 4, **kwargs: Any) -> None:
        clash = sorted(k for k in self.FIXED if k in kwargs and kwargs[k] != self.FIXED[k])
        if clash:
            raise TypeError(f"RNNMeanPool fixes {clash} (channel_attention=False, fusion=mean, pooling=mean)")
        super().__init__(num_layers, input_dim, num_classes, **{**kwargs, **self.FIXED})


class WeightedSumPool(nn.Module):
    """SUPERB baseline: softmax-normalised learnable weights over layers -> projection -> mean pooling -> linear."""

    def __init__(
        self,
        num_layers: int,
        input_dim: int,
        num_classes: int = 4,
        proj_dim: int = 256,
        normalization: str = "global",
        num_dimensions: int = 0,
    ) -> None:
        super().__init__()
        self.num_layers, self.input_dim, self.num_classes = num_layers, input_dim, num_classes
        self.num_dimensions = num_dimensions
        self.normalizer = FeatureNormalizer(num_layers, input_dim, normalization)
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        self.proj = nn.Linear(input_dim, proj_dim)
        self.out = nn.Linear(proj_dim, num_classes) if num_classes > 0 else None
        self.regressor = DimensionHead(proj_dim, num_dimensions, hidden=0) if num_dimensions > 0 else None

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        speaker_idx: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Same contract as CTARNN.forward; "channel" holds the softmax layer weights."""
        check_input(x, self.num_layers, self.input_dim)
        mask = length_mask(lengths, x.shape[2])
        x = self.normalizer(x, speaker_idx)
        weights = torch.softmax(self.layer_logits, dim=0)
        h = self.proj(torch.einsum("bltd,l->btd", x, weights))
        logits = apply_heads((self.out, self.regressor), masked_mean(h, mask[:, :, None], dim=1))
        if not return_attention:
            return logits
        att = {
            "channel": weights[None].expand(x.shape[0], -1),
            "temporal": mask.float() / mask.float().sum(1, keepdim=True),
        }
        return logits, att


MODEL_CLASSES = {"CTARNN": CTARNN, "RNNMeanPool": RNNMeanPool, "WeightedSumPool": WeightedSumPool}


def check_input(x: torch.Tensor, num_layers: int, dim: int) -> None:
    """Raise a clear error unless x is (batch, num_layers, frames, dim)."""
    if x.dim() != 4 or x.shape[1] != num_layers or x.shape[3] != dim:
        raise ValueError(f"expected (batch, {num_layers}, frames, {dim}), got {tuple(x.shape)}")


def head_sizes(spec: dict[str, Any]) -> tuple[int, int]:
    """(classes, dimensions) a model spec's task asks for: ``categorical`` (the default, also for models trained
    before the task existed), ``dimensional`` or ``both``."""
    task = spec.get("task", "categorical")
    classes = len(spec["labels"]) if task != "dimensional" else 0
    dims = len(spec.get("dimensions") or []) if task != "categorical" else 0
    return classes, dims


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The model a ``model.json`` spec describes (model_class, model_kwargs, normalization, labels, num_layers, dim;
    task, dimensions and dimension_stats for dimensional emotion).

    Unknown ``model_kwargs`` for the class are an error naming the class and the keys it takes.
    """
    name = spec["model_class"]
    cls = MODEL_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown model_class {name!r}: use one of {sorted(MODEL_CLASSES)}")
    kwargs = dict(spec.get("model_kwargs") or {})
    classes, dims = head_sizes(spec)
    fixed = {"self", "num_layers", "input_dim", "num_classes", "normalization", "num_dimensions"}
    try:
        if fixed & set(kwargs):
            raise TypeError(f"{sorted(fixed & set(kwargs))} are set from the spec, not model_kwargs")
        model = cls(
            int(spec["num_layers"]),
            int(spec["dim"]),
            classes,
            normalization=spec.get("normalization", "global"),
            num_dimensions=dims,
            **kwargs,
        )
    except TypeError as err:
        params = inspect.signature(CTARNN if cls is RNNMeanPool else cls).parameters
        allowed = sorted(set(params) - fixed)
        if cls is RNNMeanPool:
            allowed = sorted(set(allowed) - set(RNNMeanPool.FIXED))
        raise ValueError(f"model_kwargs {sorted(kwargs)} do not fit {name} ({err}); it takes {allowed}") from None
    stats = spec.get("dimension_stats")
    if dims and stats:
        names = spec["dimensions"]
        model.regressor.set_stats([stats[n][0] for n in names], [stats[n][1] for n in names])
    return model
