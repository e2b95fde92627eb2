"""Whisper encoder (transformers) as a frozen layer-wise encoder.

Layers follow transformers' ``output_hidden_states`` convention: ``L + 1`` tensors for ``L`` encoder
layers; layer 0 is the conv front end output plus positional embeddings, layer ``i`` the output of
encoder block ``i``, and the last one is taken *after* the encoder's final layer norm (transformers
overwrites the last block's output with ``last_hidden_state``).

``input: padded`` (faithful): every clip is padded to Whisper's 30-s window (3000 mel frames, 1500
output frames) and only its valid frames ``T = (n // 160 - 1) // 2 + 1`` are kept. ``input: window``: the same
with the clips padded to ``max_chunk_s`` seconds only (the positional table sliced; longer clips are chunked
at that length): the padded computation on a shorter window, closer to the padded states than trimmed and
``30 / max_chunk_s`` times less work. ``input: trimmed``:
the same layers run on the clip's own frames with the positional table sliced (much faster on short
clips, but the hidden states differ from the padded ones). Clips longer than ``max_chunk_s`` (30 s)
are cut into chunks whose frames are concatenated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from cta_rnn.device import auto_dtype
from cta_rnn.encoders.base import (
    LayerwiseEncoder,
    autocast_context,
    merge_chunks,
    relative_to_samples,
    select_layers,
    split_chunks,
)

HOP = 160
WINDOW_S = 30.0
INPUTS = ("padded", "window", "trimmed")
"""padded: the 30-s window; window: the same, padded to ``max_chunk_s`` only; trimmed: the clip's own frames."""


def whisper_frames(num_samples: int) -> int:
    """Encoder frames of a clip of at most 30 s: ``(n // 160 - 1) // 2 + 1`` (0 for clips under 10 ms)."""
    mel = num_samples // HOP
    return (mel - 1) // 2 + 1 if mel > 0 else 0


class WhisperLayerwiseEncoder(LayerwiseEncoder):
    """All hidden states of a transformers Whisper encoder (see module docstring for the layer convention)."""

    def __init__(
        self,
        source: str | Path,
        revision: str | None = None,
        layers: Any = "all",
        input: str = "padded",
        dtype: str = "auto",
        device: str | torch.device = "cpu",
        max_chunk_s: float = WINDOW_S,
        cache_dir: str | None = None,
        backend: str = "whisper",
        source_id: str | None = None,
    ):
        super().__init__()
        from transformers import WhisperFeatureExtractor, WhisperModel

        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        if not 0 < max_chunk_s <= WINDOW_S:
            raise ValueError(f"max_chunk_s must be in (0, 30], got {max_chunk_s}")
        self.device = torch.device(device)
        kw = {"revision": revision, "cache_dir": cache_dir}
        model = WhisperModel.from_pretrained(str(source), dtype=torch.float32, **kw)
        self.encoder = model.encoder.to(self.device)
        del model
        self.extractor = WhisperFeatureExtractor.from_pretrained(str(source), **kw)
        self.input_mode = input
        self.chunk_samples = int(max_chunk_s * self.sample_rate)
        self.dtype_name = auto_dtype(self.device.type) if dtype == "auto" else dtype
        self.total_layers = len(self.encoder.layers) + 1
        self.layers = select_layers(layers, self.total_layers)
        self.num_layers = len(self.layers)
        self.dim = self.encoder.config.d_model
        self.frame_rate = 50.0
        self.backend, self.source, self.revision = backend, source_id or str(source), revision
        self.model_path = str(source)
        self.freeze()

    def num_frames(self, num_samples: int) -> int:
        """Valid frames, summed over 30-s chunks."""
        full, rest = divmod(num_samples, self.chunk_samples)
        return full * whisper_frames(self.chunk_samples) + whisper_frames(rest)

    def describe(self) -> dict[str, Any]:
        """Identity for store metadata."""
        return {
            "backend": self.backend,
            "source": self.source,
            "revision": self.revision,
            "layers": self.layers,
            "total_layers": self.total_layers,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "input": self.input_mode,
            "max_chunk_s": self.chunk_samples / self.sample_rate,
            "dtype": self.dtype_name,
        }

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, mels, frames) of (B, samples) waveforms on their device: the extractor's torch path
        (``WhisperFeatureExtractor._torch_extract_fbank_features``) without the round trip through numpy."""
        ex = self.extractor
        if ex.dither:
            wave = wave + ex.dither * torch.randn_like(wave)
        window = torch.hann_window(ex.n_fft, device=wave.device)
        stft = torch.stft(wave, ex.n_fft, ex.hop_length, window=window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        mel = self._mel_filters(wave.device).T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0

    def _mel_filters(self, device: torch.device) -> torch.Tensor:
        if getattr(self, "_filters", None) is None or self._filters.device != device:
            self._filters = torch.from_numpy(self.extractor.mel_filters).to(device, torch.float32)
        return self._filters

    def _mel(self, chunks: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Log-mel features (B, mels, frames) on the chunks' device and per-chunk mel frame counts (each chunk
        normalised alone, as the extractor does: padded to 30 s, or trimmed to its own length)."""
        counts = [len(c) // HOP for c in chunks]
        if self.input_mode in ("padded", "window"):
            width = self.extractor.n_samples if self.input_mode == "padded" else self.chunk_samples
            wave = torch.zeros(len(chunks), width, device=chunks[0].device)
            for i, c in enumerate(chunks):
                wave[i, : len(c)] = c
            return self._log_mel(wave), counts
        out = torch.zeros(len(chunks), self.extractor.feature_size, max(counts), device=chunks[0].device)
        for i, (c, n) in enumerate(zip(chunks, counts, strict=True)):
            out[i, :, :n] = self._log_mel(c[None])[0, :, :n]
        return out, counts

    def _forward_layers(self, mel: torch.Tensor, mel_counts: list[int]) -> list[torch.Tensor]:
        """Selected hidden states, each (B, T, D). In trimmed mode padding never leaks into valid frames."""
        enc = self.encoder
        trimmed = self.input_mode == "trimmed"
        x = F.gelu(enc.conv1(mel))
        mask = None
        if trimmed:
            counts = torch.tensor(mel_counts, device=mel.device)[:, None]
            keep = torch.arange(mel.shape[-1], device=mel.device)[None] < counts
            x = x * keep[:, None, :].to(x.dtype)  # conv2 must see zeros, as a lone clip's zero padding
        x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
        t = x.shape[1]
        if t > enc.embed_positions.num_embeddings:
            raise ValueError(f"{t} frames exceed Whisper's {enc.embed_positions.num_embeddings} positions")
        x = x + enc.embed_positions.weight[:t]
        if trimmed and len(set(mel_counts)) > 1:
            valid = (
                torch.arange(t, device=x.device)[None]
                < torch.tensor([whisper_frames(n * HOP) for n in mel_counts], device=x.device)[:, None]
            )
            if enc.config._attn_implementation == "sdpa":
                mask = valid[:, None, None, :]
            else:
                mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(~valid, -1e9)[:, None, None]
        last = max(self.layers)
        states = {0: x} if 0 in self.layers else {}
        for i, layer in enumerate(enc.layers[: min(last, len(enc.layers))], start=1):
            x = layer(x, mask)
            if i == len(enc.layers):
                x = enc.layer_norm(x)
            if i in self.layers:
                states[i] = x
        return [states[i] for i in self.layers]

    @torch.no_grad()
    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) waveforms + relative lengths -> ((B, layers, T, D), frames), all on the encoder's device.

        States are float16 when the encoder computes in float16 (``dtype: float16``, the GPU default), else
        float32; frames past a clip's valid ones are zeros.
        """
        samples = relative_to_samples(lengths.cpu(), wavs.shape[1])
        wavs = wavs.detach().to(self.device, torch.float32)
        chunks, owner = split_chunks(wavs, samples, self.chunk_samples, min_samples=HOP)
        mel, counts = self._mel(chunks)
        with autocast_context(self.device, self.dtype_name):
            states = self._forward_layers(mel, counts)
        chunk_frames = [whisper_frames(n * HOP) for n in counts]
        if len(owner) > len(samples):  # a clip longer than max_chunk_s: concatenate its chunks' frames
            return merge_chunks(states, owner, chunk_frames, len(samples))
        dtype = torch.float16 if self.dtype_name in ("float16", "fp16") and self.device.type != "cpu" else None
        return stack_valid(states, chunk_frames, dtype or torch.float32)


def stack_valid(states: list[torch.Tensor], frames: list[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer (B, T, D) states -> ((B, layers, max frames, D) of ``dtype``, frames), zeros past valid frames."""
    counts = torch.tensor(frames, dtype=torch.long)
    longest = max(frames)
    hidden = torch.stack([h[:, :longest].to(dtype) for h in states], 1)
    valid = torch.arange(longest, device=hidden.device)[None] < counts.to(hidden.device)[:, None]
    return hidden.masked_fill_(~valid[:, None, :, None], 0), counts
