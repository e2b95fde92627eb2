"""A plain-PyTorch WeNet Conformer/Transformer encoder whose parameter names match WeNet's state dicts.

Written from WeNet's conventions (github.com/wenet-e2e/wenet, Apache-2.0), not from its code:

- input layers ``conv2d2``/``conv2d``/``conv2d6``/``conv2d8``: Conv2d(3x3, stride 2) [+ Conv2d(3x3, 2) |
  Conv2d(5x5, 3) | 2 x Conv2d(3x3, 2)], each followed by ReLU, flattened channel-major, then a Linear
  (``embed.out.0`` for 2x/4x, ``embed.linear`` for 6x/8x); ``linear``: Linear + LayerNorm.
- ``rel_pos``: x·sqrt(d), positions ``pe[0:T]`` (non-negative only, no relative shift), scored as
  ((q+u)·kᵀ + (q+v)·(W_pos pe)ᵀ)/sqrt(d_k); ``abs_pos``: x·sqrt(d) + pe; ``no_pos``: x unchanged.
- Conformer block: ½·FF (macaron), MHSA, conv module, ½·FF, final norm (pre-norm, or post-norm).
- Conv module: pointwise (d->2d), GLU, depthwise (causal: K-1 zeros on the left *before* pointwise_conv1),
  batch/layer/RMS norm, activation, pointwise; padded frames zeroed.

Padding never reaches a valid frame: keys past each clip's length are masked in attention, and the
depthwise conv also sees zeros there (after the GLU, stricter than WeNet), so a padded batch gives
each clip's single-run frames. Layer outputs come before ``after_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cta_rnn.encoders.wenet_checkpoint import EncoderConfig, sinusoid_table


@dataclass(frozen=True)
class Subsampling:
    """An input layer: its Conv2d (kernel, stride) stack and the name of its output Linear."""

    convs: tuple[tuple[int, int], ...]
    linear: str

    @property
    def rate(self) -> int:
        """Frames in per frame out."""
        return math.prod(s for _, s in self.convs)

    @property
    def right_context(self) -> int:
        """Input frames an output frame sees past its first one."""
        context, stride = 0, 1
        for kernel, step in self.convs:
            context += (kernel - 1) * stride
            stride *= step
        return context

    def out_length(self, frames: int) -> int:
        """Output frames for ``frames`` input frames (windows fully inside the input), 0 when too short."""
        for kernel, stride in self.convs:
            if frames < kernel:
                return 0
            frames = (frames - kernel) // stride + 1
        return max(frames, 0)

    def out_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        """``out_length`` of each entry of a length tensor."""
        return torch.tensor([self.out_length(int(n)) for n in frames], dtype=torch.long, device=frames.device)

    def min_frames(self) -> int:
        """Fewest input frames that give one output frame."""
        return 1 + self.right_context


SUBSAMPLINGS = {
    "linear": Subsampling((), "out.0"),
    "conv2d2": Subsampling(((3, 2),), "out.0"),
    "conv2d": Subsampling(((3, 2), (3, 2)), "out.0"),
    "conv2d6": Subsampling(((3, 2), (5, 3)), "linear"),
    "conv2d8": Subsampling(((3, 2), (3, 2), (3, 2)), "linear"),
}

MAX_LEN = 5000  # rows of WeNet's sinusoid table; longer inputs get a longer table computed on the fly
ACTIVATIONS = {
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "hardtanh": nn.Hardtanh,
}


class RMSNorm(nn.Module):
    """WeNet's RMSNorm: x·rsqrt(mean(x²) + eps)·weight, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dim."""
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """layer_norm | rms_norm | batch_norm (over channels)."""
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rms_norm":
        return RMSNorm(dim, eps=eps)
    return nn.BatchNorm1d(dim, eps=eps)


class GlobalCMVN(nn.Module):
    """(x - mean)·istd, applied to every frame (padding included, masked later)."""

    def __init__(self, mean: torch.Tensor, istd: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("istd", istd.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise fbank frames (B, T, mel)."""
        return (x - self.mean) * self.istd


class PositionalEncoding(nn.Module):
    """WeNet's abs_pos / rel_pos / no_pos front: scales x and returns the sinusoid rows ``pe[0:T]``."""

    def __init__(self, kind: str, dim: int, table: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kind, self.dim, self.xscale = kind, dim, math.sqrt(dim)
        table = table if table is not None else sinusoid_table(MAX_LEN, dim)
        self.register_buffer("table", table, persistent=False)

    def rows(self, length: int, device: torch.device) -> torch.Tensor:
        """pe[0:length] as (1, length, dim): the stored table where long enough, else computed."""
        table = self.table if self.table.shape[0] >= length else sinusoid_table(length, self.dim)
        return table[:length].to(device).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scaled x [+ pe for abs_pos], pos_emb (1, T, dim))."""
        if self.kind == "no_pos":
            return x, torch.zeros(1, x.shape[1], self.dim, device=x.device, dtype=x.dtype)
        pos = self.rows(x.shape[1], x.device)
        x = x * self.xscale
        return (x + pos if self.kind in ("abs_pos", "embed") else x), pos


class InputLayer(nn.Module):
    """WeNet's ``encoder.embed``: subsampling convs + Linear (or Linear + LayerNorm), then positions."""

    def __init__(self, cfg: EncoderConfig, table: torch.Tensor | None = None) -> None:
        super().__init__()
        self.spec = SUBSAMPLINGS[cfg.input_layer]
        d = cfg.output_size
        if not self.spec.convs:
            self.out = nn.Sequential(nn.Linear(cfg.input_dim, d), nn.LayerNorm(d, eps=1e-5))
        else:
            convs: list[nn.Module] = []
            for i, (kernel, stride) in enumerate(self.spec.convs):
                convs += [nn.Conv2d(1 if i == 0 else d, d, kernel, stride), nn.ReLU()]
            self.conv = nn.Sequential(*convs)
            linear = nn.Linear(d * self.spec.out_length(cfg.input_dim), d)
            if self.spec.linear == "linear":
                self.linear = linear
            else:
                self.out = nn.Sequential(linear)
        self.pos_enc = PositionalEncoding(cfg.pos_enc_layer_type, d, table)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, mel) -> ((B, T', d), pos_emb (1, T', d))."""
        if self.spec.convs:
            x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
            b, c, t, f = x.shape
            x = x.transpose(1, 2).reshape(b, t, c * f)
            x = self.linear(x) if self.spec.linear == "linear" else self.out(x)
        else:
            x = self.out(x)
        return self.pos_enc(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention, plain (``selfattn``) or with WeNet's relative positions (``rel_selfattn``)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d, self.heads = cfg.output_size, cfg.attention_heads
        self.d_k = d // self.heads
        self.linear_q = nn.Linear(d, d, bias=cfg.query_bias)
        self.linear_k = nn.Linear(d, d, bias=cfg.key_bias)
        self.linear_v = nn.Linear(d, d, bias=cfg.value_bias)
        self.linear_out = nn.Linear(d, d)
        self.relative = cfg.selfattention_layer_type == "rel_selfattn"
        if self.relative:
            self.linear_pos = nn.Linear(d, d, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(self.heads, self.d_k))
            self.pos_bias_v = nn.Parameter(torch.zeros(self.heads, self.d_k))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, H, d_k)."""
        return x.view(x.shape[0], -1, self.heads, self.d_k)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        """x (B, T, d); mask (B, 1|T, T) True where a key may be attended; pos_emb (1, T, d)."""
        q = self._split(self.linear_q(x))
        k = self._split(self.linear_k(x)).transpose(1, 2)
        v = self._split(self.linear_v(x)).transpose(1, 2)
        if self.relative:
            p = self._split(self.linear_pos(pos_emb)).transpose(1, 2)
            content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
            position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
            scores = (content + position) / math.sqrt(self.d_k)
        else:
            scores = torch.matmul(q.transpose(1, 2), k.transpose(-2, -1)) / math.sqrt(self.d_k)
        blocked = ~mask.unsqueeze(1)  # (B, 1, 1|T, T)
        attn = torch.softmax(scores.masked_fill(blocked, -float("inf")), dim=-1).masked_fill(blocked, 0.0)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(x.shape[0], -1, self.heads * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    """w_2(activation(w_1 x))."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.w_1 = nn.Linear(cfg.output_size, cfg.linear_units, bias=cfg.mlp_bias)
        self.activation = ACTIVATIONS[cfg.activation_type]()
        self.w_2 = nn.Linear(cfg.linear_units, cfg.output_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Position-wise feed-forward."""
        return self.w_2(self.activation(self.w_1(x)))


class ConvModule(nn.Module):
    """Conformer convolution module (causal or symmetric depthwise conv), padding-safe."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d, kernel, bias = cfg.output_size, cfg.cnn_module_kernel, cfg.conv_bias
        inner = cfg.conv_inner_factor * d // 2
        self.lorder = kernel - 1 if cfg.causal else 0
        self.pointwise_conv1 = nn.Conv1d(d, 2 * inner, 1, bias=bias)
        padding = 0 if cfg.causal else (kernel - 1) // 2
        self.depthwise_conv = nn.Conv1d(inner, inner, kernel, padding=padding, groups=inner, bias=bias)
        self.channel_last_norm = cfg.cnn_module_norm != "batch_norm"
        self.norm = make_norm(cfg.cnn_module_norm, inner, cfg.conv_norm_eps)
        self.activation = ACTIVATIONS[cfg.activation_type]()
        self.pointwise_conv2 = nn.Conv1d(inner, d, 1, bias=bias)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), valid (B, T) bool -> (B, T, d) with padded frames zero."""
        pad = ~valid.unsqueeze(1)  # (B, 1, T)
        x = x.transpose(1, 2).masked_fill(pad, 0.0)
        if self.lorder:
            x = F.pad(x, (self.lorder, 0))  # as WeNet: the left zeros go through pointwise_conv1 too
            pad = torch.cat((pad.new_zeros(pad.shape[0], 1, self.lorder), pad), dim=2)
        x = F.glu(self.pointwise_conv1(x), dim=1).masked_fill(pad, 0.0)
        x = self.depthwise_conv(x)
        if self.channel_last_norm:
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        else:
            x = self.norm(x)
        x = self.pointwise_conv2(self.activation(x))
        return x.masked_fill(~valid.unsqueeze(1), 0.0).transpose(1, 2)


class EncoderBlock(nn.Module):
    """Shared residual logic: pre-norm ``x + s·f(norm(x))`` or post-norm ``norm(x + s·f(x))``."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.normalize_before
        self.norm_kind, self.eps, self.size = cfg.layer_norm_type, cfg.norm_eps, cfg.output_size
        self.self_attn = SelfAttention(cfg)
        self.feed_forward = FeedForward(cfg)
        if cfg.concat_after:
            self.concat_linear = nn.Linear(2 * cfg.output_size, cfg.output_size)

    def _norm(self) -> nn.Module:
        return make_norm(self.norm_kind, self.size, self.eps)

    def _residual(
        self, x: torch.Tensor, norm: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], scale: float = 1.0
    ) -> torch.Tensor:
        y = norm(x) if self.pre_norm else x
        x = x + scale * fn(y)
        return x if self.pre_norm else norm(x)

    def _attend(self, mask: torch.Tensor, pos_emb: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The attention sub-block as a function of its (normalised) input."""

        def attend(y: torch.Tensor) -> torch.Tensor:
            out = self.self_attn(y, mask, pos_emb)
            if hasattr(self, "concat_linear"):  # x + concat_linear([y, att(y)]): folded into the residual
                return self.concat_linear(torch.cat((y, out), dim=-1))
            return out

        return attend


class ConformerBlock(EncoderBlock):
    """WeNet's ConformerEncoderLayer (names: norm_ff_macaron, norm_mha, norm_conv, norm_ff, norm_final)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.norm_ff = self._norm()
        self.norm_mha = self._norm()
        self.ff_scale = 0.5 if cfg.macaron_style else 1.0
        if cfg.macaron_style:
            self.feed_forward_macaron = FeedForward(cfg)
            self.norm_ff_macaron = self._norm()
        if cfg.use_cnn_module:
            self.conv_module = ConvModule(cfg)
            self.norm_conv = self._norm()
            self.norm_final = self._norm()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One block over (B, T, d)."""
        if hasattr(self, "feed_forward_macaron"):
            x = self._residual(x, self.norm_ff_macaron, self.feed_forward_macaron, self.ff_scale)
        x = self._residual(x, self.norm_mha, self._attend(mask, pos_emb))
        if hasattr(self, "conv_module"):
            x = self._residual(x, self.norm_conv, lambda y: self.conv_module(y, valid))
        x = self._residual(x, self.norm_ff, self.feed_forward, self.ff_scale)
        return self.norm_final(x) if hasattr(self, "conv_module") else x


class TransformerBlock(EncoderBlock):
    """WeNet's TransformerEncoderLayer (names: norm1 before attention, norm2 before the feed-forward)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.norm1 = self._norm()
        self.norm2 = self._norm()

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos_emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One block over (B, T, d)."""
        x = self._residual(x, self.norm1, self._attend(mask, pos_emb))
        return self._residual(x, self.norm2, self.feed_forward)


class WenetEncoder(nn.Module):
    """WeNet's ``encoder`` (global_cmvn, embed, encoders, after_norm), returning the layer-wise states."""

    def __init__(
        self,
        cfg: EncoderConfig,
        cmvn: tuple[torch.Tensor, torch.Tensor] | None = None,
        pos_table: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.global_cmvn = GlobalCMVN(*cmvn) if cmvn is not None else None
        self.embed = InputLayer(cfg, pos_table)
        block = ConformerBlock if cfg.kind == "conformer" else TransformerBlock
        self.encoders = nn.ModuleList(block(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = make_norm(cfg.layer_norm_type, cfg.output_size, cfg.norm_eps)

    def attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Key mask (B, 1, T); with a static chunk size (no dynamic chunks), WeNet's chunk mask (B, T, T)."""
        mask = valid.unsqueeze(1)
        chunk = self.cfg.static_chunk_size
        if chunk > 0 and not self.cfg.use_dynamic_chunk:
            idx = torch.arange(valid.shape[1], device=valid.device)
            visible = idx[None, :] < ((idx // chunk + 1) * chunk)[:, None]
            mask = mask & visible.unsqueeze(0)
        return mask

    def forward(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor, layers: Sequence[int]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """fbank (B, T, mel) + lengths -> (states of ``layers`` (0 = embed output), each (B, T', d); T' lengths)."""
        x = self.global_cmvn(feats) if self.global_cmvn is not None else feats
        x, pos_emb = self.embed(x)
        lengths = self.embed.spec.out_lengths(feat_lengths).to(x.device)
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        mask = self.attention_mask(valid)
        states = {0: x}
        for i, block in enumerate(self.encoders[: max(layers)], start=1):
            x = block(x, mask, pos_emb, valid)
            states[i] = x
        return [states[i] for i in layers], lengths


def detect_input_layer(weights: dict[str, torch.Tensor]) -> str | None:
    """The input layer whose conv kernels and Linear name the weights show (None if unrecognised)."""
    kernels = []
    for i in range(0, 8, 2):
        w = weights.get(f"embed.conv.{i}.weight")
        if w is None or w.dim() != 4:
            break
        kernels.append(int(w.shape[-1]))
    linear = "linear" if "embed.linear.weight" in weights else "out.0"
    for name, spec in SUBSAMPLINGS.items():
        if tuple(k for k, _ in spec.convs) == tuple(kernels) and spec.linear == linear:
            return name
    return None


def count_blocks(weights: dict[str, torch.Tensor]) -> int:
    """Number of ``encoders.<i>`` blocks in the weights."""
    ids = {int(k.split(".")[1]) for k in weights if k.startswith("encoders.") and k.split(".")[1].isdigit()}
    return max(ids) + 1 if ids else 0


def weight_problems(model: WenetEncoder, weights: dict[str, torch.Tensor]) -> list[str]:
    """Every missing, unexpected or wrongly shaped tensor of ``weights`` against ``model`` (CMVN excluded)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("global_cmvn.")}
    problems = []
    for key, tensor in expected.items():
        if key not in weights and key.endswith("num_batches_tracked"):
            continue  # a counter, unused in eval mode (absent from checkpoints of old torch versions)
        if key not in weights:
            problems.append(f"missing encoder.{key}")
        elif tuple(weights[key].shape) != tuple(tensor.shape):
            problems.append(
                f"encoder.{key} has shape {list(weights[key].shape)}, the config implies {list(tensor.shape)}"
            )
    problems += [f"unexpected encoder.{key}" for key in weights if key not in expected]
    return problems
