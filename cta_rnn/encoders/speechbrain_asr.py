"""A SpeechBrain pretrained ASR model's encoder (e.g. ``speechbrain/asr-conformer-transformerlm-librispeech``).

The model is run through its own ``encode_batch`` (feature extraction, normalisation, CNN front end,
transformer/conformer encoder); forward hooks on the encoder's layer list collect every layer.
Layer 0 is the input of the first encoder layer (front end output plus positional encoding where
it is additive), layer ``i`` the output of encoder layer ``i``, and the last one the encoder's final
output (after its final layer norm), as in transformers' convention. Valid frames follow
SpeechBrain's relative-length convention: ``round(relative_length * frames)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cta_rnn.device import auto_dtype
from cta_rnn.encoders.base import LayerwiseEncoder, autocast_context, select_layers

ENCODER_CLASSES = ("TransformerEncoder", "ConformerEncoder", "BranchformerEncoder", "ConmambaEncoder")


def find_encoder(root: nn.Module) -> nn.Module:
    """The first transformer-style encoder (one of ``ENCODER_CLASSES`` with a ``layers`` ModuleList) in ``root``."""
    for module in root.modules():
        if type(module).__name__ in ENCODER_CLASSES and isinstance(getattr(module, "layers", None), nn.ModuleList):
            return module
    raise ValueError(f"no encoder of type {ENCODER_CLASSES} with a `layers` list found")


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


class SpeechBrainLayerwiseEncoder(LayerwiseEncoder):
    """Every encoder layer of a SpeechBrain ``EncoderDecoderASR`` (or ``EncoderASR``) model, via hooks."""

    def __init__(
        self,
        source: str | Path,
        revision: str | None = None,
        layers: Any = "all",
        dtype: str = "auto",
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
        asr: Any = None,
        interface: str = "EncoderDecoderASR",
    ):
        super().__init__()
        self.device = torch.device(device)
        if asr is None:
            from speechbrain import inference

            root = Path(cache_dir or Path.home() / ".cache" / "cta_rnn" / "speechbrain")
            savedir = root / str(source).replace("/", "--")
            from speechbrain.utils.fetching import FetchConfig

            asr = getattr(inference, interface).from_hparams(
                source=str(source),
                savedir=str(savedir),
                fetch_config=FetchConfig(revision=revision),
                run_opts={"device": str(self.device)},
            )
        self.asr = asr
        self.mods = asr.mods  # registers the modules so that freeze() reaches them
        self.encoder = find_encoder(self.mods)
        self.total_layers = len(self.encoder.layers) + 1
        self.layers = select_layers(layers, self.total_layers)
        self.num_layers = len(self.layers)
        self.dtype_name = auto_dtype(self.device.type) if dtype == "auto" else dtype
        self.source, self.revision = str(source), revision
        self._captured: list[torch.Tensor] = []
        self.encoder.layers[0].register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        for layer in self.encoder.layers:
            layer.register_forward_hook(lambda _m, _i, out: self._captured.append(_first(out)))
        self.encoder.register_forward_hook(lambda _m, _i, out: self._captured.append(_first(out)))
        self.freeze()
        probe = {s: self._run(torch.zeros(1, s * self.sample_rate), torch.ones(1))[0].shape[2] for s in (2, 4)}
        self.frame_rate = (probe[4] - probe[2]) / 2.0
        self.dim = int(self._run(torch.zeros(1, self.sample_rate), torch.ones(1))[0].shape[-1])

    def _pre_hook(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._captured.clear()
        self._captured.append(args[0] if args else next(iter(kwargs.values())))

    @torch.no_grad()
    def _run(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._captured.clear()
        with autocast_context(self.device, self.dtype_name):
            if hasattr(self.asr, "encode_batch"):
                self.asr.encode_batch(wavs.to(self.device), lengths.to(self.device))
            else:
                self.mods.encoder(wavs.to(self.device), lengths.to(self.device))
        states = self._captured[:-2] + self._captured[-1:]  # last layer's output -> the encoder's normalised output
        if len(states) != self.total_layers:
            raise RuntimeError(f"captured {len(states)} states, expected {self.total_layers}")
        hidden = torch.stack([states[i].float() for i in self.layers], dim=1)
        frames = torch.round(lengths.float().cpu() * hidden.shape[2]).long().clamp(min=1)
        return hidden, frames

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) waveforms + relative lengths -> ((B, layers, T, D), frames)."""
        hidden, frames = self._run(wavs.float(), lengths)
        mask = torch.arange(hidden.shape[2], device=hidden.device)[None] < frames.to(hidden.device)[:, None]
        return hidden * mask[:, None, :, None], frames

    def describe(self) -> dict[str, Any]:
        """Identity for store metadata."""
        return {
            "backend": "speechbrain",
            "source": self.source,
            "revision": self.revision,
            "layers": self.layers,
            "total_layers": self.total_layers,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "encoder": type(self.encoder).__name__,
            "dtype": self.dtype_name,
        }
