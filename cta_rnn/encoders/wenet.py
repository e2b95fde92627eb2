"""WeNet U2/U2++ Conformer (and Transformer) encoders, loaded natively from a checkpoint folder.

``source`` is the folder a WeNet ``*_exp.tar.gz`` checkpoint archive unpacks to (``final.pt``,
``train.yaml``, ``global_cmvn``; see docs/wenet.md), e.g. the paper's GigaSpeech U2++ model. No
``wenet`` package is needed: features, CMVN and the encoder follow WeNet's own conventions
(``wenet_checkpoint`` reads the folder, ``wenet_model`` holds the network).

Features are computed as WeNet does at test time: ``torchaudio.compliance.kaldi.fbank`` of the
waveform scaled by 32768, dither 0, energy floor 0, then global CMVN. Layers: ``num_blocks + 1``
tensors; layer 0 is the input layer's output (subsampled, scaled by sqrt(d), what block 1 receives),
layer ``k`` the output of block ``k``, all before the encoder's ``after_norm``. Attention is full-context
(dynamic-chunk models are run with ``decoding_chunk_size=-1``). Valid frames: ``T' = subsample(T)``
with ``T = 1 + (n - 400) // 160`` fbank frames at 16 kHz (``conv2d6``: 16.67 frames/s).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torchaudio.compliance import kaldi

from cta_rnn.device import auto_dtype
from cta_rnn.encoders.base import LayerwiseEncoder, autocast_context, relative_to_samples, select_layers
from cta_rnn.encoders.wenet_checkpoint import FbankOptions, WenetCheckpoint, WenetCheckpointError, read_checkpoint
from cta_rnn.encoders.wenet_model import SUBSAMPLINGS, WenetEncoder, count_blocks, detect_input_layer, weight_problems

logger = logging.getLogger(__name__)

WAVEFORM_SCALE = 32768.0


def wenet_fbank(wav: torch.Tensor, options: FbankOptions) -> torch.Tensor:
    """WeNet's test-time features (T, mel) of one mono waveform in [-1, 1]."""
    return kaldi.fbank(
        wav.detach().float().reshape(1, -1) * WAVEFORM_SCALE,
        num_mel_bins=options.num_mel_bins,
        frame_length=options.frame_length,
        frame_shift=options.frame_shift,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=options.sample_rate,
        window_type=options.window_type,
    )


def pad_features(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded (B, T, mel) batch and the lengths, as WeNet's collate builds it."""
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    out = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lengths


def build_model(ckpt: WenetCheckpoint) -> WenetEncoder:
    """The encoder network of a checkpoint, after checking that config and weights agree."""
    cfg = ckpt.encoder
    mismatch = f"{ckpt.checkpoint} does not match {ckpt.config_path}"
    found = detect_input_layer(ckpt.weights)
    if found != cfg.input_layer:
        shown = found or "unrecognised embed.* weights"
        raise WenetCheckpointError(
            f"{mismatch}: input_layer is {cfg.input_layer} in the config, {shown} in the weights"
        )
    blocks = count_blocks(ckpt.weights)
    if blocks != cfg.num_blocks:
        raise WenetCheckpointError(f"{mismatch}: num_blocks is {cfg.num_blocks} in the config, {blocks} in the weights")
    model = WenetEncoder(cfg, ckpt.cmvn, ckpt.pos_table)
    problems = weight_problems(model, ckpt.weights)
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise WenetCheckpointError(f"{mismatch}: {'; '.join(problems[:4])}{more}")
    model.load_state_dict(ckpt.weights, strict=False)
    return model


class WenetLayerwiseEncoder(LayerwiseEncoder):
    """Every layer of a WeNet Conformer/Transformer encoder read from a checkpoint folder (module docstring)."""

    def __init__(
        self,
        source: str | Path,
        revision: str | None = None,
        layers: Any = "all",
        dtype: str = "auto",
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        del cache_dir  # a local folder: nothing is cached
        ckpt = read_checkpoint(source)
        if revision and not ckpt.sha256.startswith(str(revision).lower()):
            raise WenetCheckpointError(f"{ckpt.checkpoint}: sha256 {ckpt.sha256[:16]}... is not revision {revision}")
        self.device = torch.device(device)
        self.model = build_model(ckpt).to(self.device)
        self.config = ckpt.encoder
        self.fbank = ckpt.fbank
        self.subsampling = SUBSAMPLINGS[self.config.input_layer]
        self.sample_rate = self.fbank.sample_rate
        self.min_samples = self.fbank.samples_for(self.subsampling.min_frames())
        self.dtype_name = auto_dtype(self.device.type) if dtype == "auto" else dtype
        self.total_layers = self.config.num_blocks + 1
        self.layers = select_layers(layers, self.total_layers)
        self.num_layers = len(self.layers)
        self.dim = self.config.output_size
        self.frame_rate = self.sample_rate / (self.fbank.shift_samples * self.subsampling.rate)
        self.source, self.revision = str(source), ckpt.sha256[:16]
        self.freeze()
        logger.info(
            "WeNet %s: %d blocks x %d dim, %s (%dx), %.2f frames/s, from %s",
            self.config.kind, self.config.num_blocks, self.dim, self.config.input_layer,
            self.subsampling.rate, self.frame_rate, ckpt.checkpoint,
        )  # fmt: skip

    def num_frames(self, num_samples: int) -> int:
        """Valid output frames: the subsampling formula applied to the fbank frame count."""
        return self.subsampling.out_length(self.fbank.num_frames(num_samples))

    def describe(self) -> dict[str, Any]:
        """Identity for store metadata (``revision``: the first 16 hex digits of final.pt's sha256)."""
        return {
            "backend": "wenet",
            "source": self.source,
            "revision": self.revision,
            "encoder": self.config.kind,
            "input_layer": self.config.input_layer,
            "causal": self.config.causal,
            "layers": self.layers,
            "total_layers": self.total_layers,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "sample_rate": self.sample_rate,
            "dtype": self.dtype_name,
        }

    def features(self, wavs: torch.Tensor, samples: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded fbank batch of each clip's valid samples; a clip too short for one frame raises ValueError."""
        for b, n in enumerate(samples):
            if n < self.min_samples:
                raise ValueError(
                    f"clip {b} has {n} samples: fewer than the encoder's minimum {self.min_samples} "
                    f"({self.min_samples / self.sample_rate:.3f} s at {self.sample_rate} Hz gives one frame)"
                )
        wavs = wavs.detach().float().cpu()
        return pad_features([wenet_fbank(wavs[b, :n], self.fbank) for b, n in enumerate(samples)])

    @torch.no_grad()
    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) waveforms at ``sample_rate`` + relative lengths -> ((B, layers, T', D), frames)."""
        samples = relative_to_samples(lengths, wavs.shape[1])
        feats, feat_lengths = self.features(wavs, samples)
        with autocast_context(self.device, self.dtype_name):
            states, frames = self.model(feats.to(self.device), feat_lengths, self.layers)
        hidden = torch.stack([s.float() for s in states], dim=1)
        valid = torch.arange(hidden.shape[2], device=hidden.device)[None] < frames[:, None]
        return hidden * valid[:, None, :, None], frames.cpu()
