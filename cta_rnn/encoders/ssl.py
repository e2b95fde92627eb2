"""wav2vec 2.0 / HuBERT / WavLM (self-supervised or ASR fine-tuned) via transformers ``AutoModel``.

Layers follow transformers' ``output_hidden_states``: ``L + 1`` tensors, layer 0 being the CNN
feature projection (plus the convolutional positional embedding, and the encoder layer norm for
post-norm models) and the last one the output of the final transformer layer (after the final layer
norm for pre-norm "stable layer norm" models). Waveforms are normalised per utterance over their
valid samples when the model's feature extractor says ``do_normalize``; an attention mask is passed
only when it says ``return_attention_mask`` (models with group-norm CNNs, e.g. wav2vec2-base and
wav2vec2-large-960h, were trained on unmasked zero padding, so their batched outputs differ slightly
from single-utterance ones).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from cta_rnn.device import auto_dtype
from cta_rnn.encoders.base import (
    LayerwiseEncoder,
    autocast_context,
    merge_chunks,
    relative_to_samples,
    select_layers,
    split_chunks,
)


class SSLLayerwiseEncoder(LayerwiseEncoder):
    """All hidden states of a transformers wav2vec2-family model."""

    def __init__(
        self,
        source: str | Path,
        revision: str | None = None,
        layers: Any = "all",
        dtype: str = "auto",
        device: str | torch.device = "cpu",
        max_chunk_s: float | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

        self.device = torch.device(device)
        kw = {"revision": revision, "cache_dir": cache_dir}
        config = AutoConfig.from_pretrained(str(source), **kw)
        for key in ("layerdrop",):
            if hasattr(config, key):
                setattr(config, key, 0.0)
        self.model = AutoModel.from_pretrained(str(source), config=config, dtype=torch.float32, **kw).to(self.device)
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(str(source), **kw)
        except OSError:  # a bare checkpoint without preprocessor_config.json: wav2vec2 defaults
            self.extractor = Wav2Vec2FeatureExtractor(return_attention_mask=config.feat_extract_norm == "layer")
        self.use_mask = bool(getattr(self.extractor, "return_attention_mask", False))
        self.normalize = bool(getattr(self.extractor, "do_normalize", True))
        self.stride = math.prod(config.conv_stride)
        self.chunk_samples = int(max_chunk_s * self.sample_rate) if max_chunk_s else None
        self.dtype_name = auto_dtype(self.device.type) if dtype == "auto" else dtype
        self.total_layers = config.num_hidden_layers + 1
        self.layers = select_layers(layers, self.total_layers)
        self.num_layers = len(self.layers)
        self.dim = config.hidden_size
        self.frame_rate = self.sample_rate / self.stride
        self.source, self.revision, self.model_type = str(source), revision, config.model_type
        self.min_samples = self._min_samples()
        self.freeze()

    def _conv_frames(self, n: int) -> int:
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n)).item())

    def _min_samples(self) -> int:
        """Shortest input giving one frame (the receptive field of the conv stack)."""
        cfg = self.model.config
        field = 1
        for k, s in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride, strict=True))):
            field = (field - 1) * s + k
        return field

    def num_frames(self, num_samples: int) -> int:
        """Frames from the conv stack, summed over chunks."""
        if not self.chunk_samples:
            return self._conv_frames(num_samples)
        full, rest = divmod(num_samples, self.chunk_samples)
        tail = self._conv_frames(rest) if rest >= self.min_samples else 0
        return full * self._conv_frames(self.chunk_samples) + tail

    def describe(self) -> dict[str, Any]:
        """Identity for store metadata."""
        return {
            "backend": "ssl",
            "source": self.source,
            "revision": self.revision,
            "model_type": self.model_type,
            "layers": self.layers,
            "total_layers": self.total_layers,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "dtype": self.dtype_name,
            "max_chunk_s": self.chunk_samples / self.sample_rate if self.chunk_samples else None,
        }

    @torch.no_grad()
    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) waveforms + relative lengths -> ((B, layers, T, D), frames)."""
        samples = relative_to_samples(lengths, wavs.shape[1])
        chunks, owner = split_chunks(wavs.detach().float(), samples, self.chunk_samples, self.min_samples)
        sizes = [len(c) for c in chunks]
        x = torch.zeros(len(chunks), max(sizes), device=self.device)
        for i, c in enumerate(chunks):
            if self.normalize:
                c = (c - c.mean()) / torch.sqrt(c.var(unbiased=False) + 1e-7)
            x[i, : len(c)] = c.to(self.device)
        mask = None
        if self.use_mask:
            valid = torch.tensor(sizes, device=self.device)[:, None]
            mask = (torch.arange(x.shape[1], device=self.device)[None] < valid).long()
        with autocast_context(self.device, self.dtype_name):
            hidden = self.model(x, attention_mask=mask, output_hidden_states=True).hidden_states
        states = [hidden[i] for i in self.layers]
        return merge_chunks(states, owner, [self._conv_frames(n) for n in sizes], len(samples))
